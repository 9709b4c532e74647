"""The temporal Transformer head: a small pre-norm encoder over the T standardised frame features.

    (N, T, D) -> Dense(units) -> + learned position embedding (one vector per step)
              -> `layers` x [LayerNorm -> multi-head self-attention -> + ; LayerNorm -> MLP -> +]
              -> LayerNorm -> mean over the T steps -> (N, units)

Built from Keras's own layers and `keras.ops` in the functional graph, with no layer class of ours, so that
`model.keras` (and every export) loads with plain Keras 3 in safe mode, without ucfpipe installed. Attention
reads every step from every other, both ways: there is no causal mask and no bidirectional variant.
"""

from __future__ import annotations

import keras

MLP_RATIO = 4  # the feed-forward width per unit, as in the original Transformer and ViT


def check_heads(units: int, heads: int) -> None:
    """Attention splits `units` into `heads` equal parts."""
    if heads < 1 or units % heads:
        raise ValueError(f"the transformer's units ({units}) must be a positive multiple of its heads ({heads})")


def position_embedding(x, num_steps: int, units: int):
    """x (N, T, units) plus a learned vector per time step. The step indices 0..T-1 are computed from x itself
    (a running count along time), so the embedding is a plain Embedding layer in the graph, not a weight of a
    layer class of ours."""
    steps = keras.ops.cumsum(keras.ops.ones_like(x[:, :, 0], dtype="int32"), axis=1) - 1
    positions = keras.layers.Embedding(num_steps, units, name="position_embedding")(steps)
    return keras.layers.Add(name="add_position")([x, positions])


def encode(x, num_steps: int, *, units: int, layers: int, heads: int):
    """(N, T, D) standardised features -> (N, units): the clip's summary, before the classifier's dropout."""
    check_heads(units, heads)
    x = keras.layers.Dense(units, name="project")(x)
    x = position_embedding(x, num_steps, units)
    for number in range(1, layers + 1):
        name = f"block_{number}"
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_attention_norm")(x)
        y = keras.layers.MultiHeadAttention(heads, units // heads, name=f"{name}_attention")(y, y)
        x = keras.layers.Add(name=f"{name}_attention_residual")([x, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_mlp_norm")(x)
        y = keras.layers.Dense(MLP_RATIO * units, name=f"{name}_mlp_in")(y)
        y = keras.ops.gelu(y, approximate=True)  # the tanh form: ONNX (tf2onnx) has no Erfc for the exact one
        y = keras.layers.Dense(units, name=f"{name}_mlp_out")(y)
        x = keras.layers.Add(name=f"{name}_mlp_residual")([x, y])
    x = keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")(x)
    return keras.layers.GlobalAveragePooling1D(name="mean_over_time")(x)
