"""A `keras.applications` image model (one record of `backbones.BACKBONES`) cut at a layer, frozen, with its
preprocessing inside the model.

Callers pass uint8 RGB frames; the model does the backbone's own preprocessing (VGG16/ResNet50: 'caffe', RGB ->
BGR minus the ImageNet means; InceptionV3: 'tf', scaled to [-1, 1]; EfficientNet, MobileNetV3 and ConvNeXt
preprocess inside the application itself), so nobody can feed it wrongly-preprocessed pixels. Backend-agnostic
Keras 3: the same code runs on TensorFlow (CPU here) and on JAX (GPU machines).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
from keras import ops

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models.backbones import DEFAULT, OUTPUT, Backbone, get

# The ImageNet channel means, in BGR order (keras.applications.imagenet_utils, mode="caffe").
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="ucfpipe")
class Preprocess(keras.layers.Layer):
    """uint8 RGB -> the backbone's input, exactly its `keras.applications.<module>.preprocess_input`:
    'caffe' (RGB -> BGR minus the ImageNet means), 'tf' (x / 127.5 - 1) or 'none' (a cast only: the application
    preprocesses inside itself)."""

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "none"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, frames):
        x = ops.cast(frames, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


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


def seeded(seed: int, build):
    """`build()` with the backend's generator seeded: the one place a seeded random initialisation
    (`--weights none`) happens. Python's and NumPy's global streams are left where the caller had them."""
    with global_random_state_kept():
        keras.utils.set_random_seed(seed)
        return build()


def weights_identity(weights: str, seed: int, backbone: str = DEFAULT) -> dict:
    """What the fingerprint records about the weights: the name, or a content hash for a file, so two
    different files at one path never share a cache."""
    spec = get(backbone)
    if weights == "imagenet":
        return {"weights": "imagenet", "file": spec.imagenet_file}
    if weights == "none":
        # Random init depends on the backend's RNG, so the backend is part of the identity.
        return {"weights": "none", "seed": seed, "backend": keras.backend.backend()}
    path = Path(weights)
    if not path.is_file():
        raise UcfpipeError(f"weights file {weights} not found: pass --weights imagenet, none, or a path to a {backbone} "
                           f".h5/.weights.h5 file (ImageNet's is {spec.imagenet_file})")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"weights": "file", "sha256": digest.hexdigest()}


def load_application(backbone: str, weights: str, size: int, seed: int) -> keras.Model:
    """keras.applications.<constructor>(include_top=False) at size x size with `weights`: "imagenet", "none"
    (seeded random) or a weights file, loaded the way Keras loads `weights=PATH`. The caller's Python and
    NumPy random streams are left as they were, whatever the weights."""
    with global_random_state_kept():
        return _load_application(backbone, weights, size, seed)


def _load_application(backbone: str, weights: str, size: int, seed: int) -> keras.Model:
    spec = get(backbone)
    constructor = getattr(keras.applications, spec.constructor)
    shape = (size, size, 3)
    if weights == "none":
        return seeded(seed, lambda: constructor(include_top=False, weights=None, input_shape=shape))
    if weights == "imagenet":
        try:
            return constructor(include_top=False, weights="imagenet", input_shape=shape)
        except Exception as err:  # a download failure surfaces as several exception types
            raise UcfpipeError(
                f"could not get {backbone}'s ImageNet weights ({type(err).__name__}: {' '.join(str(err).split())[:120]}); offline, download "
                f"{spec.imagenet_file} elsewhere and put it in ~/.keras/models/, or pass --weights /path/to/it, "
                "or use --weights none"
            ) from None
    model = constructor(include_top=False, weights=None, input_shape=shape)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(weights)
            problem = next((str(w.message) for w in caught if "freshly-initialized" in str(w.message)), None)
        except Exception as err:
            problem = f"{type(err).__name__}: {err}"
    if problem is not None:  # Keras' message spans lines; the user gets one
        raise UcfpipeError(f"{weights} is not a {backbone} (include_top=False) weights file: {' '.join(problem.split())[:160]}")
    return model


@functools.lru_cache(maxsize=None)
def layer_choices(backbone: str) -> tuple[str, ...]:
    """The layers `--layer` may name for `backbone`: OUTPUT, then those its record offers, in model order.
    Builds the model once (random weights, smallest size)."""
    spec = get(backbone)
    return _choices(spec, load_application(backbone, "none", spec.min_size, 0))


def _choices(spec: Backbone, application: keras.Model) -> tuple[str, ...]:
    offered = re.compile(spec.layers)
    return (OUTPUT, *(layer.name for layer in application.layers if offered.fullmatch(layer.name)))


def check_layer(backbone: str, layer: str) -> None:
    """A typo in --layer fails before any work, listing the backbone's choices (the default costs nothing)."""
    spec = get(backbone)
    if layer in (spec.default_layer, OUTPUT):
        return
    _require_layer(spec, layer, layer_choices(backbone))


def _require_layer(spec: Backbone, layer: str, choices: tuple[str, ...]) -> None:
    if layer not in choices:
        raise UcfpipeError(f"{spec.name} has no layer {layer!r} to store; choose one of: {', '.join(choices)}")


def build_extractor(
    weights: str = "imagenet",
    layer: str = "",
    pooling: str = "",
    size: int = 224,
    precision: str = "float32",
    seed: int = 0,
    backbone: str = DEFAULT,
) -> keras.Model:
    """uint8 RGB (batch, size, size, 3) -> features (batch, C) for avg/max pooling, (batch, h, w, C) for none.
    An empty layer or pooling means the backbone's default."""
    spec = get(backbone)
    layer, pooling = layer or spec.default_layer, pooling or spec.default_pooling
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_" + precision if precision != "float32" else "float32")
    try:
        application = load_application(backbone, weights, size, seed)
        if layer != spec.default_layer:
            _require_layer(spec, layer, _choices(spec, application))
        application.trainable = False
        frames = keras.Input((size, size, 3), dtype="uint8", name="frames")
        output = application.output if layer == OUTPUT else application.get_layer(layer).output
        cut = keras.Model(application.inputs, output, name=f"{backbone}_{layer}")
        # Preprocess in float32 even under a mixed policy: bf16 would round the mean subtraction.
        x = cut(preprocess_layer(spec)(frames))
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        x = keras.layers.Activation("linear", dtype="float32", name="features")(x)  # outputs float32 in any policy
        return keras.Model(frames, x, name=f"{backbone}_extractor")
    finally:
        keras.config.set_dtype_policy(previous_policy)


def preprocess_layer(spec: Backbone) -> Preprocess:
    return Preprocess(spec.preprocessing, dtype="float32", name=f"{spec.name}_preprocess")


def as_stored(extractor: keras.Model, dtype: str) -> keras.Model:
    """`extractor` with its features rounded to the cache's storage `dtype` and back to float32: the numbers the
    classifier was trained on. Keras layers, so that an exported model rounds exactly as predict does."""
    if dtype == "float32":
        return extractor
    x = keras.layers.Activation("linear", dtype=dtype, name=f"as_stored_{dtype}")(extractor.output)
    x = keras.layers.Activation("linear", dtype="float32", name="stored_to_float32")(x)
    return keras.Model(extractor.input, x, name=extractor.name)


def build_extractor_for(config) -> keras.Model:
    """The extractor an ExtractConfig (or any record with its stage-one fields) describes; a record from before
    backbones were selectable is VGG16's."""
    return build_extractor(config.weights, config.layer, config.pooling, config.size, config.precision, config.seed,
                           getattr(config, "backbone", DEFAULT) or DEFAULT)
