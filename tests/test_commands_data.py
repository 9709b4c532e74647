"""check, merge, extract --shard/--views and finetune through click's CliRunner."""

import shutil

import pytest

from helpers import TINY, assert_one_line_error, invoke, tiny_flags
from ucfpipe.cache.store import FeatureStore


def test_check_reports_bad_clips_and_exits_3(synth_dataset, tmp_path):
    videos = tmp_path / "UCF-101"
    shutil.copytree(synth_dataset["videos"], videos)
    bad = sorted(videos.glob("*/*.avi"))[5]
    bad.write_text("not a video\n")
    result = invoke("check", "--videos", videos, "--splits", synth_dataset["splits"], "--frames", 40)
    assert result.exit_code == 3, result.output
    assert f"error: {bad.parent.name}/{bad.stem}: not a video" in result.output
    assert "warning:" in result.output and "fewer frames than asked" in result.output  # clips of 24-39 frames
    assert "Traceback" not in result.output
    bad.unlink()
    missing = invoke("check", "--videos", videos, "--splits", synth_dataset["splits"], "--errors-only")
    assert missing.exit_code == 3 and ": missing: " in missing.output and "warning:" not in missing.output


def test_check_passes_a_clean_tree(synth_dataset):
    result = invoke("check", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--frames", 8)
    assert result.exit_code == 0, result.output
    assert f"checked {synth_dataset['num_clips']} clips: 0 unusable, 0 warnings" in result.output


@pytest.mark.slow  # a whole stage-one pipeline (extracts, checks, re-extracts): make test
def test_sharded_extract_and_merge_through_the_cli(synth_dataset, tmp_path):
    common = ["extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], *tiny_flags()]
    for index in (0, 1):
        result = invoke(*common, "--out", tmp_path / f"part{index}", "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
    merged = invoke("merge", tmp_path / "part0", tmp_path / "part1", "--out", tmp_path / "all")
    assert merged.exit_code == 0, merged.output
    assert f"merged 2 parts: {synth_dataset['num_clips']} clips" in merged.output
    assert len(FeatureStore(tmp_path / "all")) == synth_dataset["num_clips"]
    again = invoke("merge", tmp_path / "part0", tmp_path / "part1", "--out", tmp_path / "all")
    assert again.exit_code == 2 and "already exists and is not empty" in again.output
    bad = invoke(*common, "--out", tmp_path / "x", "--shard", "2/2")
    assert bad.exit_code == 2 and "--shard must be i/N" in bad.output
    lost = invoke("merge", tmp_path / "part0", tmp_path / "gone", "--out", tmp_path / "y")  # merge has no --features
    assert_one_line_error(lost, f"no feature cache at {tmp_path / 'gone'}: if the cache moved, pass its new directory as a PART")
    assert "--features" not in lost.output


@pytest.mark.slow
def test_extract_views_flag_stores_the_views(synth_dataset, tmp_path):
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], *tiny_flags(),
                    "--out", tmp_path / "f", "--views", "flip,time")
    assert result.exit_code == 0, result.output
    store = FeatureStore(tmp_path / "f")
    assert store.views == ["center", "flip", "time_early", "time_late"]
    assert store.features(store.video_ids[:2], view=None).shape == (2, 4, TINY["frames"], 512)
    bad = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], *tiny_flags(),
                 "--out", tmp_path / "g", "--views", "mirror")
    assert bad.exit_code == 2 and "unknown view 'mirror'" in bad.output


@pytest.mark.slow
def test_finetune_command_writes_a_weights_file_extract_accepts(synth_dataset, tmp_path):
    weights = tmp_path / "ft.weights.h5"
    result = invoke("finetune", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--out", weights,
                    "--weights", "none", "--size", 32, "--frames-per-clip", 2, "--epochs", 1, "--batch-size", 16,
                    "--val-groups", 1, "--learning-rate", 1e-3)
    assert result.exit_code == 0, result.output
    extracted = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
                       "--out", tmp_path / "f", "--frames", 4, "--size", 32, "--weights", weights)
    assert extracted.exit_code == 0, extracted.output
    assert FeatureStore(tmp_path / "f").settings["weights"] == "file"
    bad = invoke("finetune", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--out", tmp_path / "w.h5")
    assert bad.exit_code == 2 and "must end in .weights.h5" in bad.output


@pytest.mark.parametrize("command", ["check", "extract"])
def test_no_progress_is_spelled_once_on_every_command_with_a_bar(synth_dataset, tmp_path, monkeypatch, command):
    from ucfpipe.stage_one import check, extract

    seen = {}
    module, result = (check, (0, [])) if command == "check" else (extract, {"failed": {}})
    monkeypatch.setattr(module, "run", lambda *args, **kwargs: (seen.update(kwargs), result)[1])
    done = invoke(command, "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
                  *(["--out", tmp_path / "f"] if command == "extract" else []), "--no-progress")
    assert done.exit_code == 0, done.output
    assert seen["progress"] is False
