"""One deployable model: a run (or an ensemble) composed into one Keras model, uint8 RGB frames in, class
probabilities out, so a user ships one artifact instead of the two-stage plumbing.

    frames (N, T, S, S, 3) uint8 RGB
      -> reshape to (N*T, S, S, 3): every frame of every clip through the CNN in one batch
      -> the run's stage one as predict rebuilds it (predictor.rebuild_stage_one): its backbone, its
         preprocessing inside (ucfpipe's own layers swapped for built-ins), the features rounded to the
         cache's storage dtype and back (what training saw)
      -> reshape to (N, T, *F)
      -> the run's sequence model (normalisation inside); an ensemble averages its members
      -> (N, classes) probabilities

The export directory holds the model, export.json (the sampling rule, sizes, classes, fingerprint, versions),
classes.json / classes.txt, README.md and classify.py (a standalone example that needs no ucfpipe). It is
written to a temporary directory beside --out and renamed into place, so --out is complete or absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ucfpipe import __version__
from ucfpipe.config import ExtractConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.destinations import output_dir
from ucfpipe.core.files import replacing_dir
from ucfpipe.models import backbones
from ucfpipe.stage_two import runs

FORMAT = "ucfpipe-export/1"
FORMATS = ("keras", "saved_model", "onnx")
MODEL_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "onnx": "model.onnx"}
RUNTIMES = {"keras": "keras with a backend", "saved_model": "tensorflow", "onnx": "onnxruntime"}  # what loads each
SPEC = "export.json"
EXAMPLE = Path(__file__).parent / "templates" / "classify.py"  # copied beside every export
# The packages each converter needs, and how to get them (setup.cfg's extra "onnx").
CONVERTERS = {"onnx": (("tf2onnx", "onnx", "onnxruntime"), 'pip install "ucfpipe[onnx]"')}
# The rule stage one applies (ucfpipe.video.decode.uniform_frame_indices with offset 0.5), spelled out for callers
# who do not have ucfpipe.
SAMPLING_FORMULA = "index_i = min(floor((i + 0.5) * (n / T)), n - 1) for i = 0 .. T-1, n = the frames that decode"


def check_format(format: str, backend: str | None, precision: str = "float32", backbone: str = "vgg16") -> None:
    """Refuse before any work: an unknown format, a TensorFlow-only format on another backend (None: not known
    yet), a converter that is not installed, ONNX of a backbone computing in another precision than float32 or
    of a backbone the converter cannot express."""
    if format not in FORMATS:
        raise UcfpipeError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format in ("saved_model", "onnx") and backend not in (None, "tensorflow"):
        # Keras writes SavedModels through TensorFlow, and ONNX (via tf2onnx) is only tested on TensorFlow here.
        raise UcfpipeError(
            f"--format {format} needs the TensorFlow backend (this is {backend}); rerun with KERAS_BACKEND=tensorflow"
        )
    packages, install = CONVERTERS.get(format, ((), ""))
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise UcfpipeError(f"--format {format} needs {' and '.join(missing)}, not installed: {install}")
    if format == "onnx" and precision != "float32":
        # Keras converts float32 models only; onnxruntime has no bfloat16 convolutions either.
        raise UcfpipeError(
            f"--format onnx needs a float32 model, but the run's features were computed in {precision} (extract "
            "--precision); export it as keras or saved_model"
        )
    problem = backbones.get(backbone).onnx_problem
    if format == "onnx" and problem:
        raise UcfpipeError(f"--format onnx cannot export a {backbone} run: {problem}; export it as keras or saved_model")


def check_out(out: Path) -> None:
    output_dir(out, "--out")  # a file, a device, a read-only folder above it
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UcfpipeError(f"--out {out} exists and is not an empty directory; choose a new directory (export never overwrites)")


def is_builtin(layer) -> bool:
    """Keras' own layers (and models) load in safe mode anywhere; a class registered by ucfpipe needs ucfpipe."""
    return type(layer).__module__.split(".")[0] == "keras"


def affine_equivalent(layer, input_shape: tuple[int, ...]):
    """Built-in layers computing what the per-pixel affine map `layer` computes (a preprocessing layer: a
    channel permutation, scaling, mean subtraction): a cast to float32, then a Dense over the channels.

    The map is measured, not assumed: probes at 0 and 255 in each channel give the matrix and the offset, and
    random frames check it; a layer that is not such a map is refused."""
    import keras

    refusal = UcfpipeError(
        f"cannot export: backbone layer {layer.name!r} ({type(layer).__name__}) is ucfpipe's own and not a per-pixel "
        "affine map that built-in Keras layers can replace"
    )
    channels = input_shape[-1]
    probes = np.zeros((channels + 1, 1, 1, channels), np.uint8)
    for channel in range(channels):
        probes[channel + 1, ..., channel] = 255
    check = np.random.default_rng(0).integers(0, 256, (2, *input_shape), dtype=np.uint8)
    try:
        answers = np.asarray(layer(probes), np.float64).reshape(channels + 1, -1)
        expected = np.asarray(layer(check), np.float64)
    except Exception:  # not even applicable to uint8 pixels
        raise refusal from None
    offset = answers[0]
    # Measured in float64 and rounded once to float32, a 1 or a 0 of VGG's channel swap comes out exact.
    matrix = (answers[1:] - offset) / 255.0
    equivalent = keras.Sequential([
        keras.Input(input_shape, dtype="uint8"),
        keras.layers.Rescaling(1.0, dtype="float32", name="to_float32"),
        keras.layers.Dense(len(offset), dtype="float32", name="affine"),
    ], name=f"{layer.name}_builtin")
    equivalent.get_layer("affine").set_weights([matrix.astype(np.float32), offset.astype(np.float32)])
    found = np.asarray(equivalent(check), np.float64)
    if expected.shape != found.shape or not np.allclose(found, expected, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(expected).max())):
        raise refusal
    return equivalent


def portable(model):
    """`model` with every ucfpipe layer replaced by built-in equivalents; Keras' own layers are reused as
    they are (same weights), nested models are walked too."""
    import keras

    def swap(layer):
        if is_builtin(layer):
            return layer
        return affine_equivalent(layer, tuple(layer.input.shape[1:]))

    return keras.models.clone_model(model, clone_function=swap, recursive=True)


def end_to_end(backbone, classifiers, frames: int, size: int):
    """uint8 RGB (N, frames, size, size, 3) -> (N, classes) probabilities, the mean over `classifiers`; `backbone`
    gives the features as the cache stored them (`predictor.rebuild_stage_one`)."""
    import keras
    from keras import ops

    clips = keras.Input((frames, size, size, 3), dtype="uint8", name="frames")
    features = backbone(ops.reshape(clips, (-1, size, size, 3)))
    x = ops.reshape(features, (-1, frames, *features.shape[1:]))
    outputs = [classifier(x) for classifier in classifiers]
    if len(outputs) > 1:
        outputs = [keras.layers.Average(name="ensemble_mean")(outputs)]
    return keras.Model(clips, outputs[0], name="ucfpipe_export")


def build(run_dir: str | Path, weights: str | None = None, members: list[runs.Run] | None = None):
    """(the end-to-end model, the members, the stage-one config) of the run or ensemble at `run_dir` (`members`:
    the directory already read)."""
    from ucfpipe.serving.predictor import rebuild_stage_one
    from ucfpipe.stage_two.ensemble import load_run_or_ensemble

    members = members if members is not None else load_run_or_ensemble(Path(run_dir))
    rebuilt = rebuild_stage_one(members[0], weights)
    stage_one = rebuilt.config
    classifiers = []
    for number, member in enumerate(members, 1):
        classifier = member.load_model()
        if len(members) > 1:
            classifier.name = f"member_{number}_{classifier.name}"  # nested models need distinct names
        classifiers.append(classifier)
    model = end_to_end(portable(rebuilt.model), classifiers, stage_one.frames, stage_one.size)
    return model, members, stage_one


def spec(run_dir: Path, members: list[runs.Run], stage_one: ExtractConfig, format: str, model) -> dict:
    import keras

    settings = members[0].cache_settings
    frames, size = stage_one.frames, stage_one.size
    return {
        "format": FORMAT,
        "model": MODEL_NAMES[format],
        "model_format": format,
        "input": {"name": "frames", "shape": [None, frames, size, size, 3], "dtype": "uint8", "colour": "RGB"},
        "output": {"shape": [None, len(members[0].classes)], "meaning": "class probabilities, in the order of classes"},
        "frames": frames,
        "size": size,
        "sampling": settings.get("sampling"),
        "sampling_formula": SAMPLING_FORMULA,
        "resize": settings.get("resize"),
        "decoding": "OpenCV (cv2.VideoCapture); a clip ends at its first frame that fails to decode",
        "classes": list(members[0].classes),
        "run": str(run_dir.resolve()),
        "members": [member.directory.name for member in members] if len(members) > 1 else [],
        "fingerprint": members[0].fingerprint,
        "storage_dtype": stage_one.dtype,
        "parameters": int(model.count_params()),
        "versions": {"ucfpipe": __version__, "keras": keras.__version__, "keras_backend": keras.backend.backend()},
    }


def readme(record: dict) -> str:
    frames, size = record["frames"], record["size"]
    loaders = {
        "keras": 'model = keras.saving.load_model("model.keras")  # plain Keras 3, no ucfpipe\n'
                 "probabilities = model.predict(clips, verbose=0)",
        "saved_model": 'model = tf.saved_model.load("saved_model")  # TensorFlow only\n'
                       "probabilities = model.serve(clips).numpy()",
        "onnx": 'session = onnxruntime.InferenceSession("model.onnx")\n'
                'probabilities = session.run(None, {session.get_inputs()[0].name: clips})[0]',
    }
    return f"""# A ucfpipe export

`{record['model']}` ({record['model_format']}) classifies video clips into {len(record['classes'])} classes
(`classes.txt`, also in `classes.json` and `export.json`): uint8 RGB frames of shape (N, {frames}, {size}, {size}, 3)
in, (N, {len(record['classes'])}) class probabilities out. The CNN with its preprocessing and the sequence model are
inside; nothing else is needed.

Feed it exactly what the model was trained on, per clip:
1. decode every frame: {record['decoding']}; n is the number decoded;
2. take T = {frames} frames: {record['sampling']}: {record['sampling_formula']};
3. resize each to {size}x{size}: {record['resize']}; then BGR -> RGB (OpenCV decodes BGR); keep uint8.

```python
# clips: uint8 array (N, {frames}, {size}, {size}, 3), each clip's T frames made as above
{loaders[record['model_format']]}
```

`classify.py` does all of it: `python classify.py . VIDEO` (needs opencv-python, numpy and {RUNTIMES[record['model_format']]}). Made from run {record['run']} (cache fingerprint {record['fingerprint']}) by ucfpipe
{record['versions']['ucfpipe']} with Keras {record['versions']['keras']}.
"""


def sublayers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from sublayers(layer)


def save_model(model, path: Path, format: str) -> None:
    import keras

    if format == "keras":
        model.save(path)
        return
    if format == "onnx":
        for layer in sublayers(model):
            if isinstance(layer, keras.layers.Normalization):
                # Its statistics are eager tensors made at build time, which tf2onnx turns into extra graph
                # inputs; as NumPy arrays they become constants of the traced graph. (This model is not reused.)
                layer.mean, layer.variance = np.asarray(layer.mean), np.asarray(layer.variance)
    try:
        (write_saved_model if format == "saved_model" else write_onnx)(model, path)
    except OSError:
        raise  # a full disk or a permission: the CLI says so in one line
    except Exception as err:  # converters fail with many exception types; say which one, in one line
        raise UcfpipeError(f"the {format} converter failed ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from None


def forward_function(model):
    """The model's forward pass as one TensorFlow function of uint8 clips (its `input_signature` the model's
    input): what both TensorFlow formats are written from. (Keras' `model.export` first walks every object every
    layer tracks, where much of an export's time went.)"""
    import tensorflow as tf  # TF-only corner: both formats need TensorFlow (check_format refused other backends)

    frames = model.inputs[0]
    spec = tf.TensorSpec(frames.shape, frames.dtype, name=frames.name)
    return tf.function(lambda clips: model(clips, training=False), input_signature=[spec])


def write_saved_model(model, path: Path) -> None:
    """The endpoint `serve` (also the signature `serving_default`, which TF Serving calls) and the variables it
    reads, as Keras writes them, but each weight once (Keras stores each twice: a SavedModel twice the size, slower
    to load)."""
    import tensorflow as tf

    serve = forward_function(model)
    traced = serve.get_concrete_function()
    archive = tf.__internal__.tracking.AutoTrackable()
    archive.serve = serve
    archive.variables = list(traced.variables)
    archive.trainable_variables = list(traced.trainable_variables)
    archive.non_trainable_variables = [v for v in traced.variables if not v.trainable]
    tf.saved_model.save(archive, str(path), signatures={"serve": traced, "serving_default": traced})


def write_onnx(model, path: Path) -> None:
    """tf2onnx's conversion of the traced forward pass, with the fixes Keras applies to tf2onnx before its own
    ONNX export (tf2onnx predates NumPy 2)."""
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    serve = forward_function(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the patch probes np.object
        patch_tf2onnx()
        tf2onnx.convert.from_function(serve, serve.input_signature, output_path=str(path))


def load_exported(path: Path, format: str):
    """The saved artifact, loaded with its own runtime: a function uint8 clips -> probabilities."""
    if format == "keras":
        import keras

        model = keras.saving.load_model(path, safe_mode=True)
        return lambda clips: np.asarray(model(clips, training=False))  # called once: eager, no graph traced
    if format == "saved_model":
        import tensorflow as tf  # TF-only corner: a SavedModel is TensorFlow's format (check_format refused others)

        model = tf.saved_model.load(str(path))
        return lambda clips: model.serve(clips).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda clips: session.run(None, {session.get_inputs()[0].name: clips})[0]


def verify(model, path: Path, format: str, tolerance: float = 1e-3) -> None:
    """Load what was written with its own runtime and compare it with the model on two random clips, so an
    export that a converter got wrong (an op it cannot express) is refused here, not found by a user later."""
    clips = np.random.default_rng(0).integers(0, 256, (2, *model.input.shape[1:]), dtype=np.uint8)
    # Called once, so eagerly: predict_on_batch would trace a graph of the whole model first (about a second for
    # ResNet50, several for Inception v3) to run it on two clips.
    expected = np.asarray(model(clips, training=False))
    try:
        found = load_exported(path, format)(clips)
    except Exception as err:  # runtimes fail with many exception types; say which one, in one line
        detail = " ".join(str(err).split())[:240]
        raise UcfpipeError(
            f"the {format} converter wrote a model its runtime cannot load ({type(err).__name__}: {detail}); "
            "this backbone has operations the converter does not support: export as keras (or saved_model) instead"
        ) from None
    difference = float(np.max(np.abs(found - expected)))
    if not difference <= tolerance:
        raise UcfpipeError(
            f"the {format} model differs from the run's by up to {difference:.3g} in probability (allowed {tolerance}); "
            "export as keras instead"
        )


def run(run_dir: str | Path, out: str | Path, format: str = "keras", weights: str | None = None, log=print) -> dict:
    """Export the run or ensemble at `run_dir` into the new directory `out`; returns export.json's record."""
    from ucfpipe.stage_two.ensemble import load_run_or_ensemble

    run_dir, out = Path(run_dir), Path(out)
    # Everything that can be refused without Keras is refused before it loads (which takes seconds to a minute).
    # KERAS_BACKEND is what Keras will use when set; else Keras' own config decides, checked once it has loaded.
    check_format(format, os.environ.get("KERAS_BACKEND") or None)
    check_out(out)
    members = load_run_or_ensemble(run_dir)
    recorded = members[0].extract_config
    precision, backbone = recorded.get("precision", "float32"), recorded.get("backbone", "vgg16")
    check_format(format, None, precision, backbone)
    if weights not in (None, "imagenet", "none") and not Path(weights).is_file():
        raise UcfpipeError(f"--weights {weights}: no such file; pass the weights file the run's features were extracted with")

    import keras

    check_format(format, keras.backend.backend(), precision, backbone)
    model, members, stage_one = build(run_dir, weights, members)
    record = spec(run_dir, members, stage_one, format, model)
    with replacing_dir(out) as tmp:
        save_model(model, tmp / MODEL_NAMES[format], format)
        verify(model, tmp / MODEL_NAMES[format], format)
        (tmp / "classes.json").write_text(json.dumps(record["classes"], indent=2) + "\n", encoding="utf-8")
        (tmp / "classes.txt").write_text("".join(f"{name}\n" for name in record["classes"]), encoding="utf-8")
        (tmp / SPEC).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(readme(record), encoding="utf-8")
        shutil.copyfile(EXAMPLE, tmp / "classify.py")
        check_out(out)  # nobody filled it meanwhile
    log(f"exported {'an ensemble of ' + str(len(members)) + ' members' if len(members) > 1 else 'the run'} as {format} "
        f"to {out}: frames (N, {stage_one.frames}, {stage_one.size}, {stage_one.size}, 3) uint8 RGB -> "
        f"{len(record['classes'])} class probabilities ({record['parameters']:,} parameters)")
    return record
