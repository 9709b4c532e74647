"""VGG16 cut at a convolutional layer, frozen, with its preprocessing inside the model.

Callers pass uint8 RGB frames; the model does VGG16's own preprocessing ('caffe' mode: RGB -> BGR, minus
the ImageNet channel means) so nobody can feed it wrongly-preprocessed pixels. Backend-agnostic Keras 3:
the same code runs on TensorFlow (CPU here) and on JAX (GPU machines).
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
from keras import ops

from .errors import UcfpipeError

# VGG16's ImageNet channel means, in BGR order (keras.applications.imagenet_utils, mode="caffe").
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


@keras.saving.register_keras_serializable(package="ucfpipe")
class VGGPreprocess(keras.layers.Layer):
    """uint8 RGB -> float BGR minus the ImageNet means, exactly `keras.applications.vgg16.preprocess_input`."""

    def call(self, frames):
        bgr = ops.flip(ops.cast(frames, self.compute_dtype), axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)


def weights_identity(weights: str, seed: int) -> dict:
    """What the fingerprint records about the weights: the name, or a content hash for a file, so two
    different files at one path never share a cache."""
    if weights == "imagenet":
        return {"weights": "imagenet", "file": IMAGENET_NOTOP_FILE}
    if weights == "none":
        # Random init depends on the backend's RNG, so the backend is part of the identity.
        return {"weights": "none", "seed": seed, "backend": keras.backend.backend()}
    path = Path(weights)
    if not path.is_file():
        raise UcfpipeError(f"weights file {weights} not found: pass --weights imagenet, none, or a path to a VGG16 .h5/.weights.h5 file")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"weights": "file", "sha256": digest.hexdigest()}


@contextmanager
def global_random_state_kept():
    """`keras.utils.set_random_seed` also reseeds Python's `random` and NumPy's global generator, and Keras
    draws a default seed from Python's `random` for every unseeded layer it builds or loads; a library call
    (a Predictor built in a notebook) must leave the caller's random streams where they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def load_vgg16(weights: str, size: int, seed: int) -> keras.Model:
    with global_random_state_kept():
        return _load_vgg16(weights, size, seed)


def _load_vgg16(weights: str, size: int, seed: int) -> keras.Model:
    shape = (size, size, 3)
    if weights == "none":
        keras.utils.set_random_seed(seed)  # the backend's generator draws the initial weights
        return keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    if weights == "imagenet":
        try:
            return keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as err:  # a download failure surfaces as several exception types
            raise UcfpipeError(
                f"could not get VGG16's ImageNet weights ({type(err).__name__}: {str(err)[:120]}); offline, download "
                f"{IMAGENET_NOTOP_FILE} elsewhere and pass --weights /path/to/it, or use --weights none"
            ) from None
    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
    try:
        model.load_weights(weights)
    except Exception as err:
        raise UcfpipeError(
            f"{weights} is not a VGG16 (include_top=False) weights file: {type(err).__name__}: {str(err)[:160]}"
        ) from None
    return model


def build_extractor(
    weights: str = "imagenet",
    layer: str = "block5_conv3",
    pooling: str = "avg",
    size: int = 224,
    precision: str = "float32",
    seed: int = 0,
) -> keras.Model:
    """uint8 RGB (batch, size, size, 3) -> features (batch, C) for avg/max pooling, (batch, h, w, C) for none."""
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_" + precision if precision != "float32" else "float32")
    try:
        vgg = load_vgg16(weights, size, seed)
        names = [l.name for l in vgg.layers]
        if layer not in names:
            convs = ", ".join(n for n in names if "conv" in n)
            raise UcfpipeError(f"VGG16 has no layer {layer!r}; choose one of: {convs}")
        vgg.trainable = False
        frames = keras.Input((size, size, 3), dtype="uint8", name="frames")
        cut = keras.Model(vgg.inputs, vgg.get_layer(layer).output, name=f"vgg16_{layer}")
        # Preprocess in float32 even under a mixed policy: bf16 would round the mean subtraction.
        x = cut(VGGPreprocess(dtype="float32", name="vgg_preprocess")(frames))
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        x = keras.layers.Activation("linear", dtype="float32", name="features")(x)  # outputs float32 in any policy
        return keras.Model(frames, x, name="vgg16_extractor")
    finally:
        keras.config.set_dtype_policy(previous_policy)
