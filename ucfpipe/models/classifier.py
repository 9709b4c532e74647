"""The sequence classifier: (T, *F) cached frame features -> class probabilities.

Backend-agnostic Keras 3 (only `keras`, `keras.ops` and NumPy): the same model trains on TensorFlow and JAX.

No masking layer: every clip in the cache has exactly T steps (stage one repeats frames of short clips), so
there is no padding to hide from the recurrent layers (or from attention).

Cells: "lstm" and "gru" (recurrent, here) and "transformer" (a temporal Transformer encoder:
models/temporal_transformer.py).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ucfpipe.models import temporal_transformer

# Standardising by a near-zero deviation turns a feature that never varied in training (a dead ReLU channel)
# into an enormous input the first time it does: variances are floored at this fraction of the mean variance.
VARIANCE_FLOOR = 1e-2


def feature_statistics(batches) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance over every step of every clip in `batches` ((n, T, *F) arrays), steps
    flattened to vectors as the model does. Accumulated in float64 around the first batch's mean, so that
    features far larger than their spread (nearly collinear frames) lose nothing to cancellation. The
    variance is floored (see VARIANCE_FLOOR)."""
    count, shift, total, total_squares = 0, None, None, None
    for batch in batches:
        vectors = np.asarray(batch, np.float64).reshape(-1, math.prod(batch.shape[2:]))
        if shift is None:
            shift = vectors.mean(axis=0)
            total, total_squares = np.zeros_like(shift), np.zeros_like(shift)
        centred = vectors - shift
        count += len(vectors)
        total += centred.sum(axis=0)
        total_squares += np.square(centred).sum(axis=0)
    if not count:
        raise ValueError("no training clips to compute feature statistics from")
    mean = total / count
    variance = np.maximum(total_squares / count - np.square(mean), 0.0)
    variance = np.maximum(variance, VARIANCE_FLOOR * max(float(variance.mean()), 1e-12))
    return (mean + shift).astype(np.float32), variance.astype(np.float32)


def build_classifier(
    num_steps: int,
    feature_shape: tuple[int, ...],
    num_classes: int,
    mean: np.ndarray,
    variance: np.ndarray,
    *,
    cell: str = "lstm",
    units: int = 512,
    layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.5,
    heads: int = 4,
) -> keras.Model:
    """Features -> per-feature standardisation -> `layers` recurrent layers (or Transformer blocks of width
    `units` and `heads` attention heads) -> softmax over `num_classes`.

    `mean`/`variance` come from the training clips only (`feature_statistics`); they live inside the model
    (saved with it), so whoever loads `model.keras` feeds raw cached features, exactly as training did.
    Standardising matters: with random VGG16 weights the pooled features of all frames are nearly collinear
    (cosine > 0.99), and the few directions in which clips differ are invisible at the raw scale."""
    features = keras.Input((num_steps, *feature_shape), name="features")
    x = features
    if len(feature_shape) > 1:  # a spatial map (pooling "none"): each step becomes one vector
        x = keras.layers.Reshape((num_steps, math.prod(feature_shape)), name="flatten_steps")(x)
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="standardise")(x)
    if cell == "transformer":
        if bidirectional:
            raise ValueError("the transformer reads every step both ways already: it takes no bidirectional")
        x = temporal_transformer.encode(x, num_steps, units=units, layers=layers, heads=heads)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        return _head(features, x, num_classes, cell)
    recurrent = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[cell]
    for number in range(1, layers + 1):
        # Only the last layer summarises the sequence; the ones below hand their whole sequence up. No
        # recurrent_dropout: it would rule out the fused cuDNN kernels on GPUs.
        layer = recurrent(units, return_sequences=number < layers, name=f"{cell}_{number}")
        if bidirectional:
            layer = keras.layers.Bidirectional(layer, name=f"bi{cell}_{number}")
        x = layer(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{number}")(x)
    return _head(features, x, num_classes, cell)


def _head(features, x, num_classes: int, cell: str) -> keras.Model:
    probabilities = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="class_probabilities")(x)
    return keras.Model(features, probabilities, name=f"{cell}_classifier")


def compile_classifier(
    model: keras.Model,
    learning_rate: float = 3e-4,
    weight_decay: float = 0.0,
    clipnorm: float = 1.0,
    label_smoothing: float = 0.0,
) -> keras.Model:
    """Adam on cross-entropy over one-hot labels (the form label smoothing needs), backpropagated through
    all T steps. `weight_decay` is decoupled from the gradient (AdamW); zeros switch options off."""
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate, weight_decay=weight_decay or None, clipnorm=clipnorm or None
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        # Weighted: under data parallelism the padding rows of a short last batch come at weight 0 (plain
        # `metrics` would count them). Without sample weights (one device) it is the plain accuracy.
        weighted_metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model
