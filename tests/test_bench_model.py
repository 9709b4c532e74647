"""The model benchmark at a tiny size: every setting timed, and the precision comparison measures a real change."""

import json

from click.testing import CliRunner

from ucfpipe.cli import main


def test_bench_model_times_every_setting_and_compares_precisions(genuine_videos, tmp_path):
    out = tmp_path / "model.json"
    result = CliRunner().invoke(main, ["bench-model", "--size", "32", "--batch-sizes", "4,8", "--precisions", "bfloat16",
                                       "--videos", str(genuine_videos), "--effect-frames", "12", "--rounds", "1",
                                       "--seconds", "0", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    timed = {(r["precision"], r["batch_size"]) for r in results["throughput"]}
    assert timed == {("float32", 4), ("float32", 8), ("bfloat16", 4), ("bfloat16", 8)}  # float32: the reference
    assert all(r["frames_per_second"] > 0 for r in results["throughput"])
    effect = results["precision_effect"]
    assert effect["float32"]["max"] == 0.0
    # bfloat16 keeps 8 mantissa bits: its features differ, by far less than a BGR/RGB mix-up (~7 %). Were the
    # flag ignored, the error would be 0.
    assert 1e-4 < effect["bfloat16"]["median"] <= effect["bfloat16"]["max"] < 3e-2
    assert 0 < results["storage_float16"]["max"] < 1e-3
    assert "fastest:" in result.output and "bfloat16" in result.output


def test_bench_model_refuses_unknown_precisions_in_one_line():
    result = CliRunner().invoke(main, ["bench-model", "--precisions", "float32,int8"])
    assert result.exit_code == 2 and "--precisions must be a comma-separated subset" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["bench-model", "--batch-sizes", "32,x"])
    assert result.exit_code == 2 and "--batch-sizes must be comma-separated positive integers" in result.output
