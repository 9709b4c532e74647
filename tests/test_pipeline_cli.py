"""Stage two's commands through click's CliRunner: synth -> extract -> train -> eval -> predict -> report."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY, assert_one_line_error, copy_cache, invoke
from ucfpipe.cache.format import MANIFEST
from ucfpipe.stage_two import runs

REPO = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = ["--units", 8, "--epochs", 2, "--batch-size", 8, "--val-groups", 1, "--learning-rate", 3e-3]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline on a small synthetic set: 6 classes x 3 groups x 2 clips, split 1 tests on g01."""
    root = tmp_path_factory.mktemp("pipeline")
    results = {"synth": invoke("synth", root / "data", "--groups", 3, "--clips-per-group", 2)}
    videos, splits = root / "data" / "UCF-101", root / "data" / "ucfTrainTestlist"
    extract_flags = [f for key, value in TINY.items() for f in (f"--{key.replace('_', '-')}", value)]
    results["extract"] = invoke("extract", "--videos", videos, "--splits", splits, "--out", root / "features", *extract_flags)
    results["train"] = invoke("train", "--features", root / "features", "--splits", splits, "--split", 1,
                              "--out", root / "run", *TRAIN_FLAGS)
    results["eval"] = invoke("eval", "--run", root / "run")
    return {"root": root, "videos": videos, "splits": splits, "features": root / "features", "run": root / "run", **results}


def test_synth_extract_train_eval_succeed_and_fill_the_run_directory(pipeline):
    for stage in ("synth", "extract", "train", "eval"):
        assert pipeline[stage].exit_code == 0, (stage, pipeline[stage].output)
    assert "Epoch 2/2" in pipeline["train"].output and "val_accuracy" in pipeline["train"].output
    assert f"next: ucfpipe eval --run {pipeline['run']}" in pipeline["train"].output
    for name in (runs.MODEL, runs.CONFIG, runs.RUN, runs.CLIPS, runs.HISTORY, runs.CURVES,
                 runs.METRICS, runs.PER_CLASS, runs.CONFUSION, runs.PREDICTIONS):
        assert (pipeline["run"] / name).is_file(), name
    assert "top-1 accuracy" in pipeline["eval"].output and "mean class accuracy" in pipeline["eval"].output
    metrics = json.loads((pipeline["run"] / runs.METRICS).read_text())
    assert metrics["num_test_clips"] == 12 and metrics["split"] == 1


def test_predict_prints_top_classes_for_synthetic_and_genuine_clips(pipeline, genuine_videos):
    clip = next((pipeline["videos"] / "FadingIn").glob("*.avi"))
    result = invoke("predict", "--run", pipeline["run"], clip, genuine_videos / "Biking" / "v_Biking_g05_c02.avi")
    assert result.exit_code == 0, result.output
    assert str(clip) in result.output and "  5. " in result.output and "v_Biking_g05_c02.avi" in result.output


def test_predict_json_is_machine_readable(pipeline, genuine_videos):
    result = invoke("predict", "--run", pipeline["run"], "--json", "--top", 2, genuine_videos / "Punch" / "v_Punch_g03_c01.avi")
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert entry["video"].endswith("v_Punch_g03_c01.avi") and len(entry["top"]) == 2
    assert {"class", "probability"} == set(entry["top"][0])


def test_predict_on_a_text_file_named_avi_is_a_one_line_error(pipeline, tmp_path):
    fake = tmp_path / "v_Fake_g01_c01.avi"
    fake.write_text("this is not a video\n")
    assert_one_line_error(invoke("predict", "--run", pipeline["run"], fake), "OpenCV cannot open it")


def test_predict_on_several_files_reports_each_bad_one_and_exits_non_zero(pipeline, genuine_videos, tmp_path):
    fake = tmp_path / "empty.avi"
    fake.write_bytes(b"")
    result = invoke("predict", "--run", pipeline["run"], genuine_videos / "Punch" / "v_Punch_g03_c01.avi", fake)
    assert_one_line_error(result, "1 of 2 videos could not be read")
    assert "v_Punch_g03_c01.avi" in result.stdout and f"error: {fake}: file is empty" in result.stderr


def test_report_gives_mean_and_std_over_runs(pipeline):
    result = invoke("report", pipeline["run"], pipeline["run"])
    assert result.exit_code == 0, result.output
    assert "mean ± std" in result.output and "top-5" in result.output and "splits repeat" in result.output


def test_report_of_an_unevaluated_run_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("report", tmp_path), "run `ucfpipe eval --run")


def evaluated(directory, split, top1, order_blind=None, **recorded):
    """A run directory holding only an eval's metrics.json: what `report` reads, without training."""
    directory.mkdir(parents=True)
    metrics = {"split": split, "top1": top1, "top5": 1.0, "mean_class_accuracy": top1, "num_test_clips": 72,
               "fingerprint": "f0", "dataset": "ucf101", "backbone": "vgg16", **recorded}
    if order_blind is not None:
        metrics["order_blind_top1"] = order_blind
    (directory / runs.METRICS).write_text(json.dumps(metrics))
    return directory


def test_report_require_margin_passes_when_every_run_beats_order_blind_by_it(tmp_path):
    dirs = [evaluated(tmp_path / f"split{s}", s, top1, 0.43) for s, top1 in ((1, 0.86), (2, 0.81), (3, 0.85))]
    result = invoke("report", "--require-margin", 0.2, *dirs)
    assert result.exit_code == 0, result.output
    assert f"at least 0.2 (the least: 0.380, {dirs[1]})" in result.stderr


def test_report_require_margin_fails_in_one_line_when_a_run_falls_short(tmp_path):
    dirs = [evaluated(tmp_path / "split1", 1, 0.86, 0.43), evaluated(tmp_path / "split2", 2, 0.50, 0.42)]
    result = invoke("report", "--require-margin", 0.2, *dirs)
    assert_one_line_error(result, f"beats the order-blind reference by only 0.080 in {dirs[1]} (top-1 0.500 vs 0.420), "
                                  "less than --require-margin 0.2", exit_code=3)
    assert "mean ± std" in result.stdout  # the table is still printed, for the record
    assert_one_line_error(invoke("report", "--markdown", "--require-margin", 0.2, *dirs), "by only 0.080", exit_code=3)


def test_report_require_margin_needs_the_order_blind_reference(tmp_path):
    run = evaluated(tmp_path / "split1", 1, 0.86)
    assert_one_line_error(invoke("report", "--require-margin", 0.2, run), "eval --run RUN_DIR --baseline")
    assert_one_line_error(invoke("report", "--require-margin", 2, run), "give one in [0, 1]")


def test_make_demo_checks_the_margin_it_claims():
    demo = (REPO / "Makefile").read_text().split("\ndemo: ", 1)[1].split("\n\n", 1)[0]
    assert "report --require-margin" in demo


def test_report_refuses_to_average_runs_of_different_datasets(tmp_path):
    ucf = evaluated(tmp_path / "ucf", 1, 0.8, dataset="ucf101")
    hmdb = evaluated(tmp_path / "hmdb", 1, 0.5, dataset="hmdb51")
    assert_one_line_error(invoke("report", ucf, hmdb),
                          f"the runs are of different datasets (hmdb51: {hmdb}; ucf101: {ucf}); report one dataset's runs")


def test_report_does_not_average_runs_of_different_backbones_and_says_why(tmp_path):
    dirs = [evaluated(tmp_path / "a", 1, 0.8, backbone="vgg16", fingerprint="f1"),
            evaluated(tmp_path / "b", 2, 0.7, backbone="resnet50", fingerprint="f2")]
    result = invoke("report", *dirs)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == ("no mean ± std: the runs are not one setup: they used different backbones "
                                              f"(vgg16: {dirs[0]}; resnet50: {dirs[1]})")


def test_train_refuses_a_cache_missing_test_clips(pipeline, tmp_path):
    test_clip = (pipeline["splits"] / "testlist01.txt").read_text().split()[0][: -len(".avi")]
    partial = copy_cache(pipeline["features"], tmp_path / "partial", drop={test_clip})
    result = invoke("train", "--features", partial, "--splits", pipeline["splits"], "--out", tmp_path / "run", *TRAIN_FLAGS)
    assert_one_line_error(result, "1 of 12 test clips and 0 of 24 train clips are not in the feature cache")


def test_a_train_stopped_by_a_damaged_cache_leaves_no_run_and_reruns_once_the_cache_is_fixed(pipeline, tmp_path):
    import h5py

    from helpers import flip_a_feature_byte
    from ucfpipe.datasets.ucf101 import read_split

    features = tmp_path / "features"
    shutil.copytree(pipeline["features"], features)
    shard = json.loads((features / MANIFEST).read_text())["shards"][0]
    # A clip train reads: a shard's rows come in the order decoding finished, so row 2 may be a test clip.
    training = {clip.video_id for clip in read_split(pipeline["splits"], 1).train}
    with h5py.File(features / shard) as handle:
        row = next(i for i, video_id in enumerate(handle["video_id"].asstr()[()]) if video_id in training)
    flip_a_feature_byte(features / shard, row=row)
    command = ["train", "--features", features, "--splits", pipeline["splits"], "--split", 1, "--out", tmp_path / "run",
               *TRAIN_FLAGS]
    assert_one_line_error(invoke(*command), f"{shard} is damaged")
    assert not (tmp_path / "run").exists()

    shutil.copyfile(pipeline["features"] / shard, features / shard)  # the cache fixed
    result = invoke(*command)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / runs.RUN).read_text())["status"] == "finished"


def test_a_run_directory_that_never_finished_an_epoch_is_started_over(pipeline, tmp_path):
    """What a kill -9 before the first epoch's end leaves: the record, settings and clips, no model, no checkpoint."""
    out = tmp_path / "run"
    (out / runs.CHECKPOINTS).mkdir(parents=True)
    for name in (runs.RUN, runs.CONFIG, runs.CLIPS, runs.LOCK):
        shutil.copyfile(pipeline["run"] / name, out / name)
    record = json.loads((out / runs.RUN).read_text())
    (out / runs.RUN).write_text(json.dumps({**record, "status": "running"}))
    (out / runs.CHECKPOINTS / "last-1.keras").write_bytes(b"half a checkpoint")
    result = invoke("train", "--features", pipeline["features"], "--splits", pipeline["splits"], "--split", 1,
                    "--out", out, *TRAIN_FLAGS)
    assert result.exit_code == 0, result.output
    assert json.loads((out / runs.RUN).read_text())["status"] == "finished" and not (out / runs.CHECKPOINTS).exists()


def test_eval_refuses_a_cache_of_other_settings(pipeline, tmp_path):
    other = copy_cache(pipeline["features"], tmp_path / "other", settings_change={"layer": "block4_conv3"})
    result = invoke("eval", "--run", pipeline["run"], "--features", other)
    assert_one_line_error(result, "is not the one")


def test_resuming_a_finished_run_is_a_one_line_error(pipeline):
    assert_one_line_error(invoke("train", "--resume", "--out", pipeline["run"]), "nothing to resume")


def test_bench_train_reports_seconds_per_epoch():
    result = invoke("bench-train", "--clips", 64, "--frames", 4, "--dim", 8, "--classes", 5, "--epochs", 2,
                    "--batch-size", 16, "--units", 8)
    assert result.exit_code == 0, result.output
    assert "epoch 1 (includes compilation)" in result.output and "s per epoch" in result.output
