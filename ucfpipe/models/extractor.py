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
import re
from pathlib import Path

import keras
import numpy as np
from keras import ops

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.rng import global_random_state_kept, seeded
from ucfpipe.models import weights_file
from ucfpipe.models.backbones import BACKBONES, DEFAULT, OUTPUT, Backbone, get

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


def load_application(backbone: str, weights: str, size: int, seed: int, include_top: bool = False) -> keras.Model:
    """keras.applications.<constructor>(include_top=False) at size x size with `weights`: "imagenet", "none"
    (seeded random) or a weights file, checked layer by layer and loaded whole (`load_weights_file`). The
    caller's Python and NumPy random streams are left as they were, whatever the weights. `include_top` builds
    the ImageNet classifier too (`ucfpipe inspect`)."""
    with global_random_state_kept():
        return _load_application(backbone, weights, size, seed, include_top)


def _load_application(backbone: str, weights: str, size: int, seed: int, include_top: bool) -> keras.Model:
    spec = get(backbone)
    constructor = functools.partial(getattr(keras.applications, spec.constructor), include_top=include_top,
                                    input_shape=(size, size, 3), **dict(spec.options))
    if weights == "none":
        return seeded(seed, lambda: constructor(weights=None))
    if weights == "imagenet":
        try:
            return constructor(weights="imagenet")
        except Exception as err:  # a download failure surfaces as several exception types
            raise UcfpipeError(
                f"could not get {backbone}'s ImageNet weights ({type(err).__name__}: {' '.join(str(err).split())[:120]}); offline, download "
                f"{spec.imagenet_file} elsewhere and put it in ~/.keras/models/, or pass --weights /path/to/it, "
                "or use --weights none"
            ) from None
    model = constructor(weights=None)
    load_weights_file(model, weights, backbone, include_top)
    return model


# -- weights files: compared with the backbone layer by layer, then loaded whole ----------------------------------
def _keras3_key(class_name: str) -> str:
    """The key Keras 3's `.weights.h5` files a layer under: its class name in snake case (saving_lib's naming)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _signature(model: keras.Model, layout: str) -> list[tuple[object, str, tuple]]:
    """(layer, its key in a file of `layout`, its arrays' shapes) of every layer with weights, in model order. A
    legacy file holds a nested model (ConvNeXt's stem) as one layer; Keras 3 files each of its layers, under
    `<key>/layers/`."""
    counts: dict[str, int] = {}
    signature = []
    for layer in model.layers:
        base = _keras3_key(type(layer).__name__)
        counts[base] = counts.get(base, -1) + 1
        key = base if counts[base] == 0 else f"{base}_{counts[base]}"
        if layout == weights_file.KERAS3 and isinstance(layer, keras.Model):
            signature += [(inner, f"{key}/layers/{inner_key}", shapes) for inner, inner_key, shapes in _signature(layer, layout)]
        elif layer.weights:
            signature.append((layer, layer.name if layout == weights_file.LEGACY else key,
                              tuple(tuple(weight.shape) for weight in layer.weights)))
    return signature


def _shapes(shapes: tuple) -> str:
    return ", ".join("x".join(map(str, shape)) for shape in shapes) or "nothing"


def _match(held, signature) -> tuple[str, list[str], list[str]]:
    """(what differs, "" if nothing; the file's key for each layer of `signature`; the file's layers beyond
    them). A legacy file is matched by position, as Keras' own loader does (layer names are numbered per
    process for some models); a Keras 3 file by its keys."""
    if held.layout == weights_file.LEGACY:
        for position, ((layer, _, shapes), (key, found)) in enumerate(zip(signature, held.layers), 1):
            if shapes != found:
                return (f"its layer {layer.name} (number {position} with weights) holds {_shapes(shapes)}, the file's "
                        f"{key} {_shapes(found)}"), [], []
        if len(held.layers) < len(signature):
            missing = signature[len(held.layers)][0].name
            return (f"the file has {len(held.layers)} layers with weights, it has {len(signature)} (from {missing} on "
                    "nothing would be loaded)"), [], []
        return "", [key for key, _ in held.layers[: len(signature)]], [key for key, _ in held.layers[len(signature):]]
    filed = dict(held.layers)
    for layer, key, shapes in signature:
        if key not in filed:
            return f"its layer {layer.name} (filed as {key}) is not in the file", [], []
        if filed[key] != shapes:
            return f"its layer {layer.name} (filed as {key}) holds {_shapes(shapes)}, the file {_shapes(filed[key])}", [], []
    keys = [key for _, key, _ in signature]
    return "", keys, [key for key in filed if key not in set(keys)]


class _Named:
    """A layer stand-in for a cached signature (only its name is read)."""

    def __init__(self, name: str):
        self.name = name


@functools.lru_cache(maxsize=None)
def _bare_signature(backbone: str, layout: str) -> tuple:
    """The no-top signature of `backbone` (random weights, smallest size: the shapes do not depend on it), with
    a stand-in for each layer that only keeps its name."""
    spec = get(backbone)
    application = load_application(backbone, "none", spec.min_size, 0)
    return tuple((_Named(layer.name), key, shapes) for layer, key, shapes in _signature(application, layout))


def _what_it_holds(held, backbone: str) -> str:
    """The file named as the backbone of the table it matches among those built by the same constructor
    (another width, or the same without its classifier), else by its size alone."""
    spec = get(backbone)
    for other in (b for b in BACKBONES.values() if b.constructor == spec.constructor):
        difference, _, extras = _match(held, _bare_signature(other.name, held.layout))
        if not difference:
            top = (f"with its ImageNet classifier ({len(extras)} more layer{'s' * (len(extras) > 1)})" if extras
                   else "without the ImageNet classifier")
            return f"{other.title} weights {top} ({held.summary()})"
    return f"the weights of another model ({held.summary()})"


def check_weights_file(backbone: str, path: str, include_top: bool = False) -> None:
    """Refuse, before any work, a weights file that does not hold every layer of `backbone` (no top) with its
    shapes: one line saying what the file holds and what was asked. Builds the backbone once (random, small)."""
    held = weights_file.read(path)
    difference, _, _ = _match(held, _bare_signature(backbone, held.layout))
    if difference:
        raise UcfpipeError(_mismatch(path, held, backbone, difference, include_top))


def _mismatch(path: str, held, backbone: str, difference: str, include_top: bool) -> str:
    spec = get(backbone)
    asked = f"--backbone {backbone} is {spec.title}" + (" with its ImageNet classifier" if include_top else "")
    wanted = (f"a {backbone} file with the classifier (Keras publishes {spec.imagenet_file} without it: take the one "
              "without no_top/notop in its name)") if include_top else f"a {backbone} weights file (Keras publishes {spec.imagenet_file})"
    return f"{path} holds {_what_it_holds(held, backbone)}, but {asked}: {difference}; pass {wanted}"


def load_weights_file(model: keras.Model, path: str, backbone: str, include_top: bool = False) -> None:
    """Every layer of `model` from the file at `path`, or UcfpipeError and nothing loaded: the file must hold each
    layer with its shapes (compared first, all of them); layers beyond them (a with-top file's classifier, for a
    model without it) are not read. Read back after loading, so no layer can stay random."""
    held = weights_file.read(path)
    signature = _signature(model, held.layout)
    difference, keys, _ = _match(held, signature)
    if difference:
        raise UcfpipeError(_mismatch(path, held, backbone, difference, include_top))
    arrays = held.arrays(keys)
    for (layer, _, _), key in zip(signature, keys):
        layer.set_weights(arrays[key])
    for (layer, _, _), key in zip(signature, keys):
        if not all(np.array_equal(np.asarray(loaded), expected) for loaded, expected in zip(layer.get_weights(), arrays[key])):
            raise UcfpipeError(f"{path}: layer {layer.name} did not take the file's {key} weights when loaded; "
                               "report this with the file's origin")


def _choices(spec: Backbone, application: keras.Model) -> tuple[str, ...]:
    offered = re.compile(spec.layers)
    return (OUTPUT, *(layer.name for layer in application.layers if offered.fullmatch(layer.name)))


def _require_layer(spec: Backbone, layer: str, choices: tuple[str, ...]) -> None:
    """The model's own check of --layer: settings were checked against the table's pattern only
    (`backbones.check_layer`), which admits names a model may lack (VGG16's block6_conv1)."""
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
