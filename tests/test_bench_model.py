"""The model benchmark at a tiny size: every setting timed, and the precision comparison measures a real change."""

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import REPO, invoke


def test_bench_model_times_every_setting_and_compares_precisions(genuine_videos, tmp_path):
    out = tmp_path / "model.json"
    result = invoke("bench-model", "--size", "32", "--batch-sizes", "4,8", "--precisions", "bfloat16",
                    "--videos", str(genuine_videos), "--effect-frames", "12", "--rounds", "1",
                    "--seconds", "0", "--json-out", str(out))
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    timed = {(r["backbone"], r["precision"], r["batch_size"]) for r in results["throughput"]}
    assert timed == {("vgg16", "float32", 4), ("vgg16", "float32", 8), ("vgg16", "bfloat16", 4),
                     ("vgg16", "bfloat16", 8)}  # float32: the reference
    assert all(r["frames_per_second"] > 0 for r in results["throughput"])
    assert results["backbones"] == {"vgg16": {"size": 32, "feature_size": 512}}
    effect = results["precision_effect"]["vgg16"]
    assert effect["float32"]["max"] == 0.0
    # bfloat16 keeps 8 mantissa bits: its features differ, by far less than a BGR/RGB mix-up (~7 %). Were the
    # flag ignored, the error would be 0.
    assert 1e-4 < effect["bfloat16"]["median"] <= effect["bfloat16"]["max"] < 3e-2
    assert 0 < results["storage_float16"]["vgg16"]["max"] < 1e-3
    assert "fastest vgg16:" in result.output and "bfloat16" in result.output


def test_bench_model_refuses_unknown_precisions_in_one_line():
    result = invoke("bench-model", "--precisions", "float32,int8")
    assert result.exit_code == 2 and "--precisions must be a comma-separated subset" in result.output
    assert "Traceback" not in result.output
    result = invoke("bench-model", "--batch-sizes", "32,x")
    assert result.exit_code == 2 and "--batch-sizes must be comma-separated positive integers" in result.output


@pytest.mark.slow
def test_bench_model_puts_backbones_side_by_side(tmp_path):
    out = tmp_path / "model.json"
    result = invoke("bench-model", "--backbone", "vgg16,mobilenet_v3_large", "--size", "32",
                    "--batch-sizes", "4", "--precisions", "float32", "--effect-frames", "4",
                    "--rounds", "1", "--seconds", "0", "--json-out", str(out))
    assert result.exit_code == 0, result.output
    results = json.loads(out.read_text())
    assert results["backbones"] == {"vgg16": {"size": 32, "feature_size": 512},
                                    "mobilenet_v3_large": {"size": 32, "feature_size": 960}}
    assert {r["backbone"] for r in results["throughput"]} == {"vgg16", "mobilenet_v3_large"}
    rows = [line.split() for line in result.output.splitlines() if line.startswith(("vgg16 ", "mobilenet_v3_large "))]
    assert [row[:3] for row in rows] == [["vgg16", "32", "512"], ["mobilenet_v3_large", "32", "960"]]


@pytest.mark.parametrize("flags, fragment", [
    (["--backbone", "vgg16,resnet"], "unknown backbone 'resnet'; choose one of: vgg16, resnet50,"),
    (["--backbone", "inception_v3", "--size", "64"], "--size 64 is below the smallest input of inception_v3 (75)"),
])
def test_bench_model_refuses_bad_backbones_in_one_line(flags, fragment):
    result = invoke("bench-model", *flags)
    assert result.exit_code == 2 and fragment in result.output and "Traceback" not in result.output


REFUSED_WITHOUT_KERAS = """
import sys
from click.testing import CliRunner
from ucfpipe.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
print(result.exit_code, result.output.strip())
assert "keras" not in sys.modules and "tensorflow" not in sys.modules, "Keras loaded before the refusal"
"""


@pytest.mark.parametrize("flags, fragment", [
    (["--size", "32", "--backbone", "all"], "--size 32 is below the smallest input of inception_v3 (75);"),
    (["--backbone", "vgg16,resnet"], "unknown backbone 'resnet'"),
])
@pytest.mark.slow
def test_bench_model_refuses_sizes_and_names_before_keras_loads(flags, fragment):
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", REFUSED_WITHOUT_KERAS, "bench-model", *flags], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    code, _, message = done.stdout.strip().partition(" ")
    assert code == "2" and fragment in message and len(message.splitlines()) == 1, done.stdout
    assert time.perf_counter() - started < 10  # Keras alone takes 10-30 s to load here
