"""Stage two's commands through click's CliRunner: synth -> extract -> train -> eval -> predict -> report."""

import json

import pytest
from click.testing import CliRunner

from conftest import TINY
from test_train import copy_cache
from ucfpipe import runs
from ucfpipe.cli import main

TRAIN_FLAGS = ["--units", 8, "--epochs", 2, "--batch-size", 8, "--val-groups", 1, "--learning-rate", 3e-3]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, fragment: str, exit_code: int = 2):
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and fragment in lines[-1], result.output
    assert "Traceback" not in result.output


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


def test_train_refuses_a_cache_missing_test_clips(pipeline, tmp_path):
    test_clip = (pipeline["splits"] / "testlist01.txt").read_text().split()[0][: -len(".avi")]
    partial = copy_cache(pipeline["features"], tmp_path / "partial", drop={test_clip})
    result = invoke("train", "--features", partial, "--splits", pipeline["splits"], "--out", tmp_path / "run", *TRAIN_FLAGS)
    assert_one_line_error(result, "1 of 12 test clips and 0 of 24 train clips are not in the feature cache")


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
