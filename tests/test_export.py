"""Export: one end-to-end model (uint8 frames in, probabilities out) that equals the two-stage `predict` on the
genuine clips, loads without ucfpipe, and is written whole or not at all."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import QUIET, REPO, extract_tiny, tiny_config
from ucfpipe.cache.store import FeatureStore
from ucfpipe.cli import main
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.serving import export
from ucfpipe.serving import predictor as predict
from ucfpipe.stage_two import ensemble, train
from ucfpipe.video.decode import read_clip

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

# Run first in every clean subprocess: ucfpipe cannot be imported there (isolated mode drops PYTHONPATH; the
# finder also refuses an installed or editable ucfpipe), so whatever loads must load with Keras alone.
WITHOUT_UCFPIPE = """
import sys
class NoUcfpipe:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ucfpipe":
            raise ImportError("ucfpipe is hidden in this process")
sys.meta_path.insert(0, NoUcfpipe())
try:
    import ucfpipe
    raise SystemExit("ucfpipe was importable")
except ImportError:
    pass
"""
# Loads an export with its own runtime and writes its probabilities for the clips in a .npy file.
LOAD_AND_PREDICT = WITHOUT_UCFPIPE + """
import numpy as np
kind, path, clips_file, out_file = sys.argv[1:5]
clips = np.load(clips_file)
if kind == "keras":
    import keras
    probabilities = keras.saving.load_model(path).predict(clips, verbose=0)
elif kind == "saved_model":
    import tensorflow as tf
    loaded = tf.saved_model.load(path)  # kept in a name: its variables live as long as it does
    probabilities = loaded.serve(clips).numpy()
else:
    import onnxruntime
    session = onnxruntime.InferenceSession(path)
    probabilities = session.run(None, {session.get_inputs()[0].name: clips})[0]
np.save(out_file, probabilities)
assert not any(name.split(".")[0] == "ucfpipe" for name in sys.modules)
"""
# The test extra installs tf2onnx, onnx and onnxruntime; only a missing runtime skips the ONNX test (a missing
# converter fails it: the install is broken).
HAS_ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None
FORMATS_HERE = ["keras", "saved_model", pytest.param("onnx", marks=pytest.mark.skipif(
    not HAS_ONNXRUNTIME, reason="onnxruntime is not installed: pip install 'ucfpipe[onnx]'"))]


def clean_python(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """`python -I` from a directory with no ucfpipe in it, PYTHONPATH unset."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | (env or {})
    return subprocess.run([sys.executable, "-I", *args], capture_output=True, text=True, timeout=300, env=environment,
                          cwd="/", **kwargs)


@pytest.fixture(scope="module")
def cut_cache(synth_dataset, tmp_path_factory):
    """The tiny cache with VGG16 cut at block2: a 1 MB model, so that saving and converting it stay quick."""
    return extract_tiny(synth_dataset, tmp_path_factory.mktemp("cache") / "features", layer="block2_conv2")


@pytest.fixture(scope="module")
def tiny_run(cut_cache, synth_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    train.run(tiny_config(cut_cache, synth_dataset["splits"], out), **QUIET)
    return out


@pytest.fixture(scope="module")
def genuine(genuine_videos, tiny_run, tmp_path_factory):
    """The six genuine clips: their paths, their frames as the documented rule gives them (a .npy), and the
    two-stage path's probabilities."""
    paths = sorted(genuine_videos.rglob("*.avi"))
    assert len(paths) == 6
    predictor = predict.Predictor(tiny_run)
    clips = np.stack([read_clip(path, 8, 32).frames for path in paths])
    clips_file = tmp_path_factory.mktemp("clips") / "clips.npy"
    np.save(clips_file, clips)
    return {"paths": paths, "clips": clips, "clips_file": clips_file,
            "probabilities": np.stack([predictor.probabilities(path) for path in paths]), "classes": predictor.classes}


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run exported once per format, on first use."""
    root, made = tmp_path_factory.mktemp("exports"), {}

    def get(format):
        if format not in made:
            made[format] = root / format
            export.run(tiny_run, made[format], format, log=lambda *_: None)
        return made[format]

    return get


def probabilities_without_ucfpipe(format, path, genuine, tmp_path):
    out = tmp_path / f"{format}.npy"
    done = clean_python("-c", LOAD_AND_PREDICT, format, str(path), str(genuine["clips_file"]), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)


def test_the_keras_export_loads_without_ucfpipe_and_equals_two_stage_predict(exported, genuine, tmp_path):
    directory = exported("keras")
    found = probabilities_without_ucfpipe("keras", directory / "model.keras", genuine, tmp_path)
    np.testing.assert_allclose(found, genuine["probabilities"], atol=1e-3)


def test_the_keras_export_loads_on_jax_too(exported, genuine, tmp_path):
    directory = exported("keras")
    out = tmp_path / "jax.npy"
    done = clean_python("-c", LOAD_AND_PREDICT + "import keras; assert keras.backend.backend() == 'jax'", "keras",
                        str(directory / "model.keras"), str(genuine["clips_file"]), str(out), env={"KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(np.load(out), genuine["probabilities"], atol=1e-3)


def test_the_saved_model_export_equals_two_stage_predict(exported, genuine, tmp_path):
    directory = exported("saved_model")
    found = probabilities_without_ucfpipe("saved_model", directory / "saved_model", genuine, tmp_path)
    np.testing.assert_allclose(found, genuine["probabilities"], atol=1e-3)


def test_the_saved_model_has_tf_servings_signature_and_each_weight_once(exported):
    import tensorflow as tf

    path = exported("saved_model") / "saved_model"
    loaded = tf.saved_model.load(str(path))
    assert {"serve", "serving_default"} <= set(loaded.signatures)  # TF Serving calls serving_default
    [frames] = loaded.signatures["serving_default"].structured_input_signature[1].values()
    assert frames.dtype == tf.uint8 and frames.shape.rank == 5
    weights = sum(np.asarray(v).nbytes for v in loaded.variables)
    stored = sum(f.stat().st_size for f in (path / "variables").glob("variables.data-*"))
    assert weights <= stored < 1.2 * weights  # Keras' model.export stores each weight twice


@pytest.mark.skipif(not HAS_ONNXRUNTIME, reason="onnxruntime is not installed: pip install 'ucfpipe[onnx]'")
def test_the_onnx_export_runs_in_onnxruntime_and_equals_two_stage_predict(exported, genuine, tmp_path):
    directory = exported("onnx")
    found = probabilities_without_ucfpipe("onnx", directory / "model.onnx", genuine, tmp_path)
    np.testing.assert_allclose(found, genuine["probabilities"], atol=1e-3)


def test_the_features_inside_are_rounded_as_the_cache_stored_them(exported, cut_cache, synth_dataset):
    model = keras.saving.load_model(exported("keras") / "model.keras")
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))  # frames -> stored features
    store = FeatureStore(cut_cache)
    video_ids = store.video_ids[:2]
    clips = np.stack([read_clip(f"{synth_dataset['videos']}/{v}.avi", 8, 32).frames for v in video_ids])
    found = np.asarray(backbone.predict(clips.reshape(-1, 32, 32, 3), verbose=0)).reshape(2, 8, -1)
    cached = store.features(video_ids).astype(np.float32)
    assert found.dtype == np.float32 and np.array_equal(found.astype(np.float16), found)  # float16 numbers
    # Batch shapes may round a rare value to the neighbouring float16; unrounded, almost none would be equal.
    assert np.mean(found == cached) > 0.99
    np.testing.assert_allclose(found, cached, rtol=2e-3)


def test_the_files_beside_the_model_say_how_to_feed_it(exported, tiny_run, genuine):
    directory = exported("keras")
    assert sorted(p.name for p in directory.iterdir()) == [
        "README.md", "classes.json", "classes.txt", "classify.py", "export.json", "model.keras"]
    record = json.loads((directory / "export.json").read_text())
    classes = list(genuine["classes"])
    assert record["classes"] == classes == json.loads((directory / "classes.json").read_text())
    assert (directory / "classes.txt").read_text().splitlines() == classes
    assert record["frames"] == 8 and record["size"] == 32 and record["input"] == {
        "name": "frames", "shape": [None, 8, 32, 32, 3], "dtype": "uint8", "colour": "RGB"}
    run_record = json.loads((tiny_run / "run.json").read_text())
    assert record["fingerprint"] == run_record["cache"]["fingerprint"]
    assert record["sampling"] == run_record["cache"]["settings"]["sampling"] and "INTER_AREA" in record["resize"]
    assert record["versions"]["keras"] == keras.__version__ and record["versions"]["ucfpipe"]
    assert "(N, 8, 32, 32, 3)" in (directory / "README.md").read_text()
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_the_readme_example_is_the_shipped_classify_py(exported):
    shipped = (exported("keras") / "classify.py").read_text()
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert shipped in blocks, "README's 'Deploy it' example must be ucfpipe/serving/templates/classify.py verbatim"
    # Importing it runs nothing (no arguments read, no model loaded): its functions can be reused.
    done = clean_python("-c", WITHOUT_UCFPIPE + "import runpy; names = runpy.run_path(sys.argv[1]); "
                        "assert callable(names['main']) and 'keras' not in sys.modules", str(exported("keras") / "classify.py"))
    assert done.returncode == 0 and done.stdout == "", done.stderr[-3000:]


@pytest.mark.parametrize("format", FORMATS_HERE)
def test_the_shipped_classify_py_runs_each_format_without_ucfpipe(format, exported, genuine):
    for number in (4,):
        done = clean_python("-c", WITHOUT_UCFPIPE + "import runpy; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
                            "run_name='__main__')", str(exported(format) / "classify.py"), str(exported(format)),
                            str(genuine["paths"][number]))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Traceback" not in done.stderr
        printed = [line.split("\t") for line in done.stdout.splitlines()]
        assert len(printed) == 5
        expected = dict(zip(genuine["classes"], genuine["probabilities"][number]))
        for name, probability in printed:
            assert float(probability) == pytest.approx(expected[name], abs=1e-3)
        assert [float(p) for _, p in printed] == sorted((float(p) for _, p in printed), reverse=True)


def test_an_ensemble_exports_as_one_model_averaging_its_members(cut_cache, synth_dataset, genuine, tmp_path):
    out = tmp_path / "ens"
    ensemble.train(tiny_config(cut_cache, synth_dataset["splits"], out, epochs=1), [1, 2], [], **QUIET)
    export.run(out, tmp_path / "export", "keras", log=lambda *_: None)
    model = keras.saving.load_model(tmp_path / "export" / "model.keras")
    expected = np.stack([predict.Predictor(out).probabilities(path) for path in genuine["paths"][:2]])
    np.testing.assert_allclose(model.predict(genuine["clips"][:2], verbose=0), expected, atol=1e-3)
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["members"] == ["member-lstm-seed1", "member-lstm-seed2"]  # two models of one name, renamed inside


def test_ucfpipe_layers_become_built_in_layers_with_the_same_numbers():
    from ucfpipe.models.extractor import Preprocess

    frames = keras.Input((4, 4, 3), dtype="uint8")
    model = keras.Model(frames, Preprocess("caffe", dtype="float32")(frames))
    swapped = export.portable(model)
    assert all(type(layer).__module__.split(".")[0] == "keras" for layer in export.sublayers(swapped))
    check = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(swapped.predict(check, verbose=0), model.predict(check, verbose=0))


@keras.saving.register_keras_serializable(package="ucfpipe_tests")
class Squares(keras.layers.Layer):
    def call(self, frames):
        return keras.ops.square(keras.ops.cast(frames, "float32"))


def test_a_custom_layer_that_is_no_affine_map_is_refused():
    frames = keras.Input((4, 4, 3), dtype="uint8")
    with pytest.raises(UcfpipeError, match="'squares' .* not a per-pixel affine map"):
        export.portable(keras.Model(frames, Squares(name="squares")(frames)))


# -- refusals: one line, exit 2, nothing written -----------------------------------------------------------------
def refused(args, tmp_path, *, message):
    result = CliRunner().invoke(main, ["export", *args])
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output) and len(result.output.strip().splitlines()) == 1, result.output
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    return result


def test_onnx_without_its_converter_names_the_extra(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # what find_spec sees when the package is not installed
    refused(["--run", str(tiny_run), "--out", str(tmp_path / "out"), "--format", "onnx"], tmp_path,
            message=r'needs tf2onnx, not installed: pip install "ucfpipe\[onnx\]"')
    assert not (tmp_path / "out").exists()


def test_onnx_of_a_backbone_computing_in_bfloat16_is_refused():
    export.check_format("onnx", "tensorflow", "float32")
    with pytest.raises(UcfpipeError, match="needs a float32 model, but the run's features were computed in bfloat16"):
        export.check_format("onnx", "tensorflow", "bfloat16")
    export.check_format("keras", "jax", "bfloat16")


def test_a_directory_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes").mkdir()
    refused(["--run", str(tmp_path / "notes"), "--out", str(tmp_path / "out")], tmp_path,
            message="is not a ucfpipe run directory")
    assert not (tmp_path / "out").exists()


def test_an_out_that_is_not_empty_is_refused_and_kept(tiny_run, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    refused(["--run", str(tiny_run), "--out", str(tmp_path / "out")], tmp_path, message="exists and is not an empty directory")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_full_disk_leaves_nothing_half_written(tiny_run, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        result = CliRunner().invoke(main, ["export", "--run", str(tiny_run), "--out", str(disk / "out")])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert "disk" in result.output
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_saved_model_on_jax_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ucfpipe.cli", "export", "--run", str(tmp_path), "--out",
                           str(tmp_path / "out"), "--format", "saved_model"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    assert "Error: --format saved_model needs the TensorFlow backend (this is jax)" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_the_staging_directory_of_a_killed_export_is_removed_by_the_next(tiny_run, tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # its pid now names no process, as after a kill -9 (tests/test_files.py kills a real writer)
    stale = tmp_path / f".out.{killed.pid}.tmp"
    (stale / "model.keras").mkdir(parents=True)
    export.run(tiny_run, tmp_path / "out", "keras", log=lambda *_: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- every backbone of the table exports its run's own stage one ---------------------------------------------------
# (backbone, storage dtype, second format, the --layer stored and its channels). The layer is an early one: what
# this proves is that the export rebuilds the run's own backbone, cut where the run's cache was; each backbone whole
# through every format is test_matrix.py's.
BACKBONE_EXPORTS = [("resnet50", "float16", "keras", "conv2_block3_out", 256),
                    ("mobilenet_v3_large", "float32", "onnx", "expanded_conv_2_add", 24)]


@pytest.fixture(scope="module", params=BACKBONE_EXPORTS, ids=lambda param: param[0])
def backbone_export(request, synth_dataset, genuine_videos, tmp_path_factory):
    """A tiny run of a non-VGG backbone cut at an early layer (T = 4, 32x32; float32 storage where random weights'
    features underflow float16), predict's probabilities on two genuine clips, and its exports (keras, and the
    param's format)."""
    name, dtype, format, layer, feature_size = request.param
    root = tmp_path_factory.mktemp(name)
    cache = extract_tiny(synth_dataset, root / "features", backbone=name, frames=4, dtype=dtype, layer=layer)
    train.run(tiny_config(cache, synth_dataset["splits"], root / "run"), **QUIET)
    paths = sorted(genuine_videos.rglob("*.avi"))[:2]
    clips = np.stack([read_clip(path, 4, 32).frames for path in paths])
    np.save(root / "clips.npy", clips)
    predictor = predict.Predictor(root / "run")
    exports = {}
    for each in dict.fromkeys(("keras", format)):
        exports[each] = root / each
        export.run(root / "run", exports[each], each, log=lambda *_: None)
    return {"name": name, "format": format, "exports": exports, "clips": clips, "clips_file": root / "clips.npy",
            "probabilities": np.stack([predictor.probabilities(path) for path in paths]),
            "feature_size": predictor.extractor.output.shape[-1], "layer_size": feature_size}


def test_a_run_of_another_backbone_exports_its_own_backbone_and_equals_predict(backbone_export):
    directory = backbone_export["exports"]["keras"]
    model = keras.saving.load_model(directory / "model.keras")
    assert all(export.is_builtin(layer) for layer in export.sublayers(model))
    assert backbone_export["name"] in {layer.name.split("_extractor")[0] for layer in model.layers}
    np.testing.assert_allclose(model.predict(backbone_export["clips"], verbose=0), backbone_export["probabilities"], atol=1e-3)
    assert backbone_export["feature_size"] == backbone_export["layer_size"]  # the run's layer, not the default


def test_a_run_of_another_backbone_exports_to_the_other_formats_too(backbone_export, tmp_path):
    format = backbone_export["format"]
    if format == "onnx" and not HAS_ONNXRUNTIME:
        pytest.skip("onnxruntime is not installed: pip install 'ucfpipe[onnx]'")
    path = backbone_export["exports"][format] / export.MODEL_NAMES[format]
    found = probabilities_without_ucfpipe(format, path, backbone_export, tmp_path)
    np.testing.assert_allclose(found, backbone_export["probabilities"], atol=1e-3)


# -- settings refused before Keras loads ---------------------------------------------------------------------------
REFUSED_WITHOUT_KERAS = """
import sys
from ucfpipe.serving import export
from ucfpipe.core.errors import UcfpipeError
try:
    export.run(*sys.argv[1:4], weights=sys.argv[4] or None)
except UcfpipeError as err:
    print(err)
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "Keras loaded before the refusal"
"""


@pytest.mark.parametrize("case, message", [
    ("not_empty", "exists and is not an empty directory"),
    ("no_weights", "--weights .*missing.h5: no such file"),
    ("bfloat16_onnx", "--format onnx needs a float32 model, but the run's features were computed in bfloat16"),
])
def test_settings_that_need_no_keras_are_refused_before_it_loads(case, message, tiny_run, tmp_path):
    import shutil

    run_dir, out, format, weights = tiny_run, tmp_path / "out", "keras", ""
    if case == "not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "no_weights":
        weights = str(tmp_path / "missing.h5")
    else:
        run_dir = tmp_path / "run"
        shutil.copytree(tiny_run, run_dir)
        record = json.loads((run_dir / "run.json").read_text())
        record["cache"]["extract_config"]["precision"] = "bfloat16"
        (run_dir / "run.json").write_text(json.dumps(record))
        format = "onnx"
    done = subprocess.run([sys.executable, "-c", REFUSED_WITHOUT_KERAS, str(run_dir), str(out), format, weights],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(message, done.stdout), done.stdout


def test_an_export_its_runtime_cannot_load_or_that_computes_otherwise_is_refused(tiny_run, tmp_path, monkeypatch):
    """The safety net behind the table's onnx_problem: export loads what it wrote and compares it with the
    model, so a converter that silently dropped an op cannot hand a user a broken file with exit 0."""
    def unloadable(path, format):
        raise RuntimeError("INVALID_GRAPH: No Op registered for StatefulPartitionedCall")

    monkeypatch.setattr(export, "load_exported", unloadable)
    refused(["--run", str(tiny_run), "--out", str(tmp_path / "a")], tmp_path,
            message=r"the keras converter wrote a model its runtime cannot load \(RuntimeError: INVALID_GRAPH")
    monkeypatch.setattr(export, "load_exported", lambda path, format: lambda clips: np.zeros((len(clips), 6)))
    refused(["--run", str(tiny_run), "--out", str(tmp_path / "b")], tmp_path,
            message=r"the keras model differs from the run's by up to 0\.\d+ in probability")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_onnx_of_a_backbone_the_converter_cannot_express_is_refused_up_front():
    with pytest.raises(UcfpipeError, match="--format onnx cannot export a convnext_tiny run: tf2onnx leaves"):
        export.check_format("onnx", "tensorflow", "float32", "convnext_tiny")
    export.check_format("keras", "tensorflow", "float32", "convnext_tiny")
