"""Stage one's commands through click's CliRunner: output, exit statuses, and one-line errors."""

import shutil

import pytest

from helpers import assert_one_line_error, invoke, tiny_flags
from ucfpipe.cache.store import FeatureStore


def test_splits_reports_official_counts(official_splits):
    result = invoke("splits", "--splits", official_splits)
    assert result.exit_code == 0, result.output
    for counts in ("1        9537   3783      101", "2        9586   3734      101", "3        9624   3696      101"):
        assert counts in result.output
    assert "g08-g25 / g01-g07" in result.output


def test_splits_with_videos_is_the_download_check_and_exits_3_when_clips_are_missing(official_splits, genuine_videos):
    result = invoke("splits", "--splits", official_splits, "--videos", genuine_videos)  # 6 of UCF-101's clips
    assert "6 of 13320 listed clips are under" in result.output and "13314 missing" in result.output
    assert_one_line_error(result, f"13314 of 13320 listed clips are missing under {genuine_videos}: finish the download",
                          exit_code=3)
    assert "--allow-missing" in result.output


def test_check_features_on_an_interrupted_cache_exits_3_and_says_to_rerun_extract(synth_cache, tmp_path):
    interrupted = tmp_path / "interrupted"  # what an interrupted extract leaves: whole shards, no manifest yet
    interrupted.mkdir()
    for shard in synth_cache.glob("shard-*.h5"):
        shutil.copy(shard, interrupted / shard.name)
    result = invoke("check", "--features", interrupted)
    assert_one_line_error(result, f"{interrupted} is an unfinished cache", exit_code=3)
    assert "rerun the same `ucfpipe extract` command to complete it" in result.output
    helped = " ".join(invoke("check", "--help").output.split())
    assert "With --features: 0 when every shard is whole" in helped and "3 otherwise, an unfinished cache" in helped
    assert_one_line_error(invoke("check", "--features", tmp_path / "none"), "no feature cache at")  # no cache: bad input


def test_splits_on_a_folder_without_lists_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("splits", "--splits", tmp_path), "classInd.txt not found")


@pytest.mark.slow  # a whole stage-one pipeline (extracts, then extracts again): make test
def test_extract_then_rerun_is_a_no_op(synth_dataset, tmp_path):
    args = ["extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
            "--out", tmp_path / "f", *tiny_flags()]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert f"done: {synth_dataset['num_clips']} clips extracted" in first.output
    second = invoke(*args)
    assert second.exit_code == 0 and "nothing to do" in second.output
    assert len(FeatureStore(tmp_path / "f")) == synth_dataset["num_clips"]


def test_config_file_is_read_and_flags_override_it(synth_dataset, tmp_path):
    config = tmp_path / "extract.toml"
    config.write_text(f'videos = "{synth_dataset["videos"]}"\nsplits = "{synth_dataset["splits"]}"\n'
                      f'out = "{tmp_path / "f"}"\nweights = "none"\nframes = 5\nsize = 32\n')
    result = invoke("extract", "--config", config, "--frames", 4)
    assert result.exit_code == 0, result.output
    assert FeatureStore(tmp_path / "f").num_steps == 4


@pytest.mark.parametrize(
    "content, fragment",
    [("frame = 3\n", "unknown key 'frame'"), ('frames = "many"\n', "frames must be of type int"),
     ("frames = [\n", "is not valid TOML"), ('pooling = "mean"\n', "pooling must be one of avg, max, none")],
)
def test_bad_config_files_are_one_line_errors(tmp_path, synth_dataset, content, fragment):
    config = tmp_path / "extract.toml"
    config.write_text(content)
    result = invoke("extract", "--config", config, "--videos", synth_dataset["videos"],
                    "--splits", synth_dataset["splits"], "--out", tmp_path / "f")
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize(
    "flags, fragment",
    [(["--size", "16"], "size must be at least 32"), (["--layer", "block9"], "vgg16 has no layer 'block9' to store; choose output or a layer named like"),
     (["--weights", "/no/such/file.h5"], "weights file /no/such/file.h5 not found")],
)
def test_bad_flags_are_one_line_errors(synth_dataset, tmp_path, flags, fragment):
    args = ["extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
            "--out", tmp_path / "f", *tiny_flags()]
    result = invoke(*args, *flags)
    assert_one_line_error(result, fragment)


def test_a_weights_file_that_is_not_vgg16_is_a_one_line_error(synth_dataset, tmp_path):
    bogus = tmp_path / "weights.h5"
    bogus.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
                    "--out", tmp_path / "f", *tiny_flags(), "--weights", bogus)
    assert_one_line_error(result, "is not a Keras weights file")


@pytest.mark.slow  # a whole stage-one pipeline (extracts, then extracts again): make test
def test_unreadable_clips_exit_with_status_3_and_are_retried(synth_dataset, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(synth_dataset["videos"], videos)
    broken = sorted(videos.glob("*/*.avi"))[0]
    good = broken.read_bytes()
    broken.write_bytes(b"")
    args = ["extract", "--videos", videos, "--splits", synth_dataset["splits"], "--out", tmp_path / "f", *tiny_flags()]
    result = invoke(*args)
    assert_one_line_error(result, "1 clips could not be read", exit_code=3)
    broken.write_bytes(good)
    retry = invoke(*args)
    assert retry.exit_code == 0, retry.output
    assert "done: 1 clips extracted" in retry.output
    assert len(FeatureStore(tmp_path / "f")) == synth_dataset["num_clips"]


def test_unwritable_output_is_a_one_line_error(synth_dataset):
    # /proc refuses new directories even to root, like a read-only or full file system would.
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
                    "--out", "/proc/ucfpipe-cache", *tiny_flags())
    assert_one_line_error(result, "cannot write the feature cache at /proc/ucfpipe-cache")


@pytest.mark.parametrize("error", [RuntimeError("Function Type: ... Captures: ..."), OSError(5, "Input/output error")])
def test_an_error_raised_once_a_stop_signal_came_is_the_interrupt(monkeypatch, error):
    """TensorFlow reports a KeyboardInterrupt raised while a compiled function runs as its own error (seen once
    when SIGTERM hit extract's first batch): still the one "interrupted" line, not that error."""
    import signal

    import click
    from click.testing import CliRunner

    from ucfpipe.commands.options import user_errors
    from ucfpipe.core import errors, interrupts

    @click.command()
    @user_errors
    def stage():
        monkeypatch.setattr(interrupts, "_requested", True)
        monkeypatch.setattr(interrupts, "_signal", signal.SIGTERM)
        raise error

    result = CliRunner().invoke(stage, [])
    assert result.exit_code == errors.EXIT_INTERRUPTED, result.output
    assert result.output.strip() == "Error: interrupted; rerun the same command to continue"

    @click.command()
    @user_errors
    def no_signal():
        raise error

    monkeypatch.undo()
    plain = CliRunner().invoke(no_signal, [])  # without a stop signal the error is what it was
    assert "interrupted" not in plain.output and (plain.exception is error or "Input/output error" in plain.output)
