"""Every feature with every other (issue 17): each backbone of the table through every serving path, each
dataset kind through every stage, driven through the CLI in this process (Keras loads once).

Backbones (each model of the table once: MobileNet v1 at its narrowest width): one extract (T = 4, each
backbone's smallest input, random weights, or the genuine ImageNet file where ../shared/realdata has it, two
stored views) and one
training run per backbone, shared by its tests: predict, predict --window and live on a genuine clip, export
in every format (each equal to predict within 1e-3), eval --tta, and an ensemble; VGG16 once more with the
temporal Transformer cell through all of these (its ensemble: an lstm and a transformer member). The features are stored as
float32 for every backbone: random-weight MobileNetV3 and EfficientNet features underflow float16 (issue 17,
10), and float32 for all keeps one setting for any backbone the table gains. Storage as float16 (the default)
is covered by the dataset-kind runs below and by test_export.py.

Dataset kinds: the same synthetic clips laid out as each kind (UCF-101 as generated, HMDB51 in its official
split-file format written here, a user's folders listed by `splits make`), VGG16 at 32x32, through splits,
extract, train, eval, predict and export.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import REALDATA, invoke
from ucfpipe import datasets
from ucfpipe.datasets.synth import split_blocks
from ucfpipe.models.backbones import BACKBONES
from ucfpipe.serving.export import FORMATS, MODEL_NAMES
from ucfpipe.serving.predictor import Predictor
from ucfpipe.stage_two.runs import Run
from ucfpipe.video.decode import read_clip

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

FRAMES = 4
NUM_CLASSES, NUM_GROUPS, CLIPS_PER_GROUP = 4, 3, 2  # 24 clips; split 1 tests on group 1 (8 clips)
TRAIN_FLAGS = ["--units", 8, "--epochs", 2, "--batch-size", 8, "--val-groups", 1, "--learning-rate", 3e-3,
               "--dropout", 0.0, "--label-smoothing", 0.0, "--patience", 5, "--seed", 0]
TRANSFORMER_FLAGS = ["--cell", "transformer", "--heads", 2, "--layers", 2]
TOLERANCE = 1e-3  # an export against predict, as the README promises


def classes_of(run_dir: Path) -> list[str]:
    """The classes of a run, or of an ensemble's first member (members share them)."""
    if (run_dir / "ensemble.json").is_file():
        run_dir = run_dir / json.loads((run_dir / "ensemble.json").read_text())["members"][0]
    return list(json.loads((run_dir / "run.json").read_text())["classes"])


def predicted(run_dir: Path, video: Path) -> np.ndarray:
    """`predict --json` over every class, as a vector in the run's class order."""
    classes = classes_of(run_dir)
    result = invoke("predict", video, "--run", run_dir, "--json", "--top", len(classes), exit_code=0)
    [record] = json.loads(result.stdout)
    assert record["video"] == str(video)
    found = {entry["class"]: entry["probability"] for entry in record["top"]}
    assert sorted(found) == sorted(classes), "predict --top N must list every class once"
    probabilities = [entry["probability"] for entry in record["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    return np.array([found[name] for name in classes])


def assert_distribution(probabilities, where: str) -> None:
    probabilities = np.asarray(probabilities, np.float64)
    assert np.all(probabilities >= 0) and np.all(np.isfinite(probabilities)), f"{where}: {probabilities}"
    assert abs(probabilities.sum() - 1.0) < 1e-4, f"{where}: sums to {probabilities.sum()}"


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def assert_evaluated(run_dir: Path, *, test_clips: int, classes: list[str]) -> dict:
    """metrics.json, per_class.csv and predictions.csv of an eval, consistent with the split and classes."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_test_clips"] == test_clips and metrics["num_not_evaluated"] == 0
    for name in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= metrics[name] <= 1.0
    assert metrics["top1"] <= metrics["top5"]
    per_class = csv_rows(run_dir / "per_class.csv")
    assert [row["class"] for row in per_class] == classes
    assert sum(int(row["support"]) for row in per_class) == test_clips
    rows = csv_rows(run_dir / "predictions.csv")
    assert len(rows) == test_clips and {row["true"] for row in rows} <= set(classes)
    assert (run_dir / "confusion.png").stat().st_size > 0
    return metrics


def exported_probabilities(directory: Path, model_format: str, clips: np.ndarray) -> np.ndarray:
    """What an export computes for uint8 clips (N, T, S, S, 3), run with its own runtime."""
    path = directory / MODEL_NAMES[model_format]
    if model_format == "keras":
        import keras

        return np.asarray(keras.saving.load_model(path).predict(clips, verbose=0))
    if model_format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept in a name: its variables live as long as it does
        return loaded.serve(clips).numpy()
    if model_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path))
        return session.run(None, {session.get_inputs()[0].name: clips})[0]
    raise AssertionError(f"export format {model_format!r} has no loader in this test: add one")


def assert_export_equals_predict(run_dir: Path, out: Path, model_format: str, video: Path, expected=None) -> None:
    """`expected`: predict's probabilities for `video` when the caller has them already."""
    invoke("export", "--run", run_dir, "--out", out, "--format", model_format, exit_code=0)
    record = json.loads((out / "export.json").read_text())
    assert record["classes"] == classes_of(run_dir) and record["model_format"] == model_format
    clip = read_clip(video, record["frames"], record["size"]).frames[None]
    found = exported_probabilities(out, model_format, clip)
    assert found.shape == (1, len(record["classes"]))
    assert_distribution(found[0], f"{model_format} export")
    expected = predicted(run_dir, video) if expected is None else expected
    np.testing.assert_allclose(found[0], expected, atol=TOLERANCE)


# -- shared data ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> dict:
    """4 classes x 3 groups x 2 clips in UCF-101's layout, small frames: 24 clips, cheap for every backbone."""
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("matrix") / "synth", num_classes=NUM_CLASSES, num_groups=NUM_GROUPS,
                            clips_per_group=CLIPS_PER_GROUP, frame_size=(80, 60), min_frames=12, max_frames=20, seed=0)


@pytest.fixture(scope="module")
def genuine_clip(genuine_videos) -> Path:
    clips = sorted(genuine_videos.rglob("*.avi"))
    assert clips, f"no genuine clips under {genuine_videos}"
    return clips[0]


# -- backbones x commands -------------------------------------------------------------------------------------
def one_per_model() -> list[str]:
    """Each model of the table once: of the widths of one constructor (MobileNet v1's four) the narrowest, the
    cheapest, and one whose width must reach every rebuild (alpha left out anywhere builds width 1.0 there)."""
    narrowest: dict[str, str] = {}
    for name, spec in BACKBONES.items():
        if spec.constructor not in narrowest or spec.feature_size < BACKBONES[narrowest[spec.constructor]].feature_size:
            narrowest[spec.constructor] = name
    return list(narrowest.values())


def weights_for(name: str) -> str:
    """The genuine ImageNet weights file of `name` where ../shared/realdata holds it (MobileNet v1 0.25's: random
    MobileNet v1 features are about 1e-18, too small for two seeds to train apart), else seeded random weights."""
    genuine = REALDATA / "weights" / BACKBONES[name].imagenet_file
    return str(genuine) if genuine.is_file() else "none"


def backbones_and_cells() -> list[tuple[str, str]]:
    """Each backbone with the lstm, and the cheapest (VGG16 at 32x32) with the transformer."""
    return [(name, "lstm") for name in one_per_model()] + [("vgg16", "transformer")]


@pytest.fixture(scope="module", params=backbones_and_cells(), ids=lambda pair: pair[0] if pair[1] == "lstm" else "+".join(pair))
def backbone_run(request, small_dataset, tmp_path_factory) -> dict:
    """One backbone of the table: its features (centre and flipped views, float32) and one trained run of `cell`."""
    name, cell = request.param
    root = tmp_path_factory.mktemp(f"{name}-{cell}")
    features, run_dir = root / "features", root / "run"
    size = BACKBONES[name].min_size
    invoke("extract", "--videos", small_dataset["videos"], "--splits", small_dataset["splits"], "--out", features,
           "--backbone", name, "--size", size, "--frames", FRAMES, "--weights", weights_for(name), "--dtype", "float32",
           "--views", "flip", "--batch-size", 64, "--workers", 2, "--seed", 0, "--no-progress", exit_code=0)
    cell_flags = TRANSFORMER_FLAGS if cell == "transformer" else []
    invoke("train", "--features", features, "--splits", small_dataset["splits"], "--out", run_dir, *TRAIN_FLAGS,
           *cell_flags, exit_code=0)
    assert classes_of(run_dir) == small_dataset["classes"]
    assert json.loads((run_dir / "config.json").read_text())["cell"] == cell
    return {"backbone": name, "cell": cell, "size": size, "features": features, "run": run_dir, "root": root,
            "splits": small_dataset["splits"]}


@pytest.fixture(scope="module")
def backbone_predicted(backbone_run, genuine_clip) -> np.ndarray:
    """`predict`'s probabilities for the genuine clip, once per backbone (each predict builds the backbone)."""
    return predicted(backbone_run["run"], genuine_clip)


def test_predict_gives_a_distribution_over_the_run_classes(backbone_run, backbone_predicted):
    assert_distribution(backbone_predicted, f"{backbone_run['backbone']} predict")


def test_predict_window_covers_the_whole_video(backbone_run, genuine_clip):
    run_dir, classes = backbone_run["run"], classes_of(backbone_run["run"])
    result = invoke("predict", genuine_clip, "--run", run_dir, "--window", "auto", "--json", "--top", len(classes),
                    exit_code=0)
    [record] = json.loads(result.stdout)
    windows = record["windows"]
    assert len(windows) >= 2, "a genuine clip of seconds must give several windows of the run's clip duration"
    starts = [w["start"] for w in windows]
    assert starts == sorted(starts) and starts[0] == 0.0 and windows[-1]["end"] <= record["duration"] + 1e-3
    for window in windows:
        assert_distribution([entry["probability"] for entry in window["top"]], f"window at {window['start']} s")
    # The video's probabilities are the mean over its windows.
    mean = np.mean([[{e["class"]: e["probability"] for e in w["top"]}[c] for c in classes] for w in windows], axis=0)
    whole = {e["class"]: e["probability"] for e in record["top"]}
    np.testing.assert_allclose([whole[c] for c in classes], mean, atol=1e-5)
    assert record["segments"][0]["start"] == 0 and record["segments"][-1]["end"] == pytest.approx(record["duration"], abs=1e-3)


def test_live_on_a_file_source_predicts_until_its_end(backbone_run, genuine_clip):
    classes = classes_of(backbone_run["run"])
    result = invoke("live", "--run", backbone_run["run"], "--source", genuine_clip, "--json", "--top", len(classes),
                    exit_code=0)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2
    times = [line["time"] for line in lines]
    assert times == sorted(times) and len(set(times)) == len(times)
    for line in lines:
        assert_distribution([entry["probability"] for entry in line["top"]], f"live at {line['time']} s")
        assert sorted(entry["class"] for entry in line["top"]) == sorted(classes)
    [summary] = [line for line in result.stderr.splitlines() if line.startswith("live: ")]
    assert f"{len(lines)} predictions" in summary and summary.endswith("ended: end"), summary


@pytest.mark.parametrize("model_format", FORMATS)
def test_export_equals_predict_on_a_genuine_clip(backbone_run, backbone_predicted, model_format, genuine_clip):
    out = backbone_run["root"] / f"export-{model_format}"
    problem = BACKBONES[backbone_run["backbone"]].onnx_problem if model_format == "onnx" else ""
    if problem:  # the table says the converter cannot express it: refused up front in one line, nothing written
        result = invoke("export", "--run", backbone_run["run"], "--out", out, "--format", model_format, exit_code=2)
        assert problem in result.output and len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists()
        return
    assert_export_equals_predict(backbone_run["run"], out, model_format, genuine_clip, backbone_predicted)


def test_eval_with_tta_averages_the_stored_views(backbone_run, small_dataset):
    run_dir = backbone_run["run"]
    result = invoke("eval", "--run", run_dir, "--tta", exit_code=0)
    assert "test-time augmentation: probabilities averaged over 2 views (center, flip)" in result.output
    test_clips = len(datasets.read_split("ucf101", small_dataset["splits"], 1).test)
    metrics = assert_evaluated(run_dir, test_clips=test_clips, classes=small_dataset["classes"])
    assert metrics["tta"]["views"] == ["center", "flip"]
    for name in ("top1", "top5", "mean_class_accuracy"):
        assert 0.0 <= metrics["tta"][name] <= 1.0


def test_an_ensemble_averages_its_members(backbone_run, small_dataset, genuine_clip, monkeypatch):
    out = backbone_run["root"] / "ensemble"
    if backbone_run["cell"] == "transformer":  # one member of each kind: the recurrent and the attention head
        members_flags, expected = [*TRANSFORMER_FLAGS[2:], "--cells", "lstm,transformer"], ["member-lstm-seed0", "member-transformer-seed0"]
    else:
        members_flags, expected = ["--seeds", "1,2"], ["member-lstm-seed1", "member-lstm-seed2"]
    invoke("train", "--features", backbone_run["features"], "--splits", backbone_run["splits"], "--out", out,
           *TRAIN_FLAGS[:2], "--epochs", 1, *TRAIN_FLAGS[4:], *members_flags, exit_code=0)
    members = json.loads((out / "ensemble.json").read_text())["members"]
    assert members == expected
    invoke("eval", "--run", out, exit_code=0)
    test_clips = len(datasets.read_split("ucf101", small_dataset["splits"], 1).test)
    metrics = assert_evaluated(out, test_clips=test_clips, classes=small_dataset["classes"])
    assert sorted(metrics["members"]) == members
    # The features predict computes are kept as it computes them (members share one cache, so one backbone serves
    # all): each member alone on exactly those, without building the backbone a second time.
    featurised = []
    featurise = Predictor.featurise
    monkeypatch.setattr(Predictor, "featurise",
                        lambda self, frames: featurised.append((frames, featurise(self, frames))) or featurised[-1][1])
    together = predicted(out, genuine_clip)
    assert_distribution(together, "ensemble predict")
    [(frames, features)] = featurised
    np.testing.assert_array_equal(frames, read_clip(genuine_clip, FRAMES, backbone_run["size"]).frames)
    each = [np.asarray(Run(out / member).load_model().predict_on_batch(features[None]), np.float64)[0] for member in members]
    assert not np.allclose(each[0], each[1], atol=1e-4), "two seeds gave the same model: the mean would prove nothing"
    np.testing.assert_allclose(together, np.mean(each, axis=0), atol=2e-6)


# -- dataset kinds x stages -----------------------------------------------------------------------------------
def clips_of(dataset: dict):
    """(class, group, clip number, path) of every synthetic clip."""
    for class_name in dataset["classes"]:
        for path in sorted((Path(dataset["videos"]) / class_name).glob("*.avi")):
            _, _, group, clip = path.stem.rsplit("_", 3)
            yield class_name, int(group[1:]), int(clip[1:]), path


def as_ucf101(dataset: dict, root: Path) -> dict:
    return {"videos": Path(dataset["videos"]), "splits": Path(dataset["splits"])}


def as_hmdb51(dataset: dict, root: Path) -> dict:
    """HMDB51's official layout: <class>_test_split<N>.txt of '<video file name> <id>' lines (1 train, 2 test,
    0 unused) ending in a space, as the official files do; videos at <root>/<class>/<name>. Split N tests on
    group block N; each group is one source film, so validation holds out whole films."""
    videos, splits = root / "hmdb51", root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    blocks = split_blocks(NUM_GROUPS)
    lines: dict[tuple[str, int], list[str]] = {}
    for class_name, group, clip, path in clips_of(dataset):
        name = f"Film_{group:02d}_{class_name}_u_nm_np1_fr_goo_{clip - 1}.avi"
        (videos / class_name).mkdir(parents=True, exist_ok=True)
        os.link(path, videos / class_name / name)
        for number in (1, 2, 3):
            lines.setdefault((class_name, number), []).append(f"{name} {2 if group in blocks[number - 1] else 1} \n")
    for (class_name, number), text in lines.items():
        (splits / f"{class_name}_test_split{number}.txt").write_text("".join(text))
    return {"videos": videos, "splits": splits}


def as_folders(dataset: dict, root: Path) -> dict:
    """A user's own folders, names without groups (phone-style), listed by `ucfpipe splits make`."""
    videos, splits = root / "my_videos", root / "lists"
    for class_name, group, clip, path in clips_of(dataset):
        (videos / class_name).mkdir(parents=True, exist_ok=True)
        os.link(path, videos / class_name / f"VID_{group}{clip:02d}.avi")
    result = invoke("splits", "make", "--videos", videos, "--out", splits, exit_code=0)
    assert f"wrote {splits}: {NUM_CLASSES} classes, 1 fold(s)" in result.output
    return {"videos": videos, "splits": splits}


LAYOUTS = {"ucf101": as_ucf101, "hmdb51": as_hmdb51, "folders": as_folders}


@pytest.fixture(scope="module", params=list(datasets.NAMES))
def dataset_run(request, small_dataset, genuine_clip, tmp_path_factory) -> dict:
    """One dataset kind through splits, extract and train (VGG16, 32x32, float16 storage)."""
    kind = request.param
    assert kind in LAYOUTS, f"dataset kind {kind!r} has no layout in the matrix test: add one to LAYOUTS"
    root = tmp_path_factory.mktemp(kind)
    data = LAYOUTS[kind](small_dataset, root)
    where = ["--dataset", kind, "--splits", data["splits"]]
    listed = invoke("splits", *where, "--videos", data["videos"], exit_code=0)
    total = NUM_CLASSES * NUM_GROUPS * CLIPS_PER_GROUP
    assert f"{total} of {total} listed clips are under {data['videos']}; 0 missing" in listed.output, listed.output
    split = datasets.read_split(kind, data["splits"], 1)
    assert not split.groups("train") & split.groups("test") or split.holdout == "stratified"
    features, run_dir = root / "features", root / "run"
    invoke("extract", *where, "--videos", data["videos"], "--out", features, "--frames", FRAMES, "--size", 32,
           "--weights", "none", "--seed", 0, "--no-progress", exit_code=0)
    invoke("train", "--features", features, "--splits", data["splits"], "--out", run_dir, *TRAIN_FLAGS, exit_code=0)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["dataset"] == kind and record["classes"] == list(split.classes)
    return {"kind": kind, "run": run_dir, "split": split, "root": root, **data}


def test_dataset_kind_evaluates_its_test_list(dataset_run):
    run_dir, split = dataset_run["run"], dataset_run["split"]
    result = invoke("eval", "--run", run_dir, exit_code=0)
    assert f"{len(split.test)} test clips" in result.output
    assert_evaluated(run_dir, test_clips=len(split.test), classes=list(split.classes))


def test_dataset_kind_predicts_its_own_clips(dataset_run):
    run_dir, split = dataset_run["run"], dataset_run["split"]
    video = Path(dataset_run["videos"]) / split.test[0].relative_path
    assert video.is_file(), video
    assert_distribution(predicted(run_dir, video), f"{dataset_run['kind']} predict")


def test_dataset_kind_exports_equal_to_predict(dataset_run, genuine_clip):
    assert_export_equals_predict(dataset_run["run"], dataset_run["root"] / "export", "keras", genuine_clip)
