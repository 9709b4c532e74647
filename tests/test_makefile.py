"""The Makefile's own steps: the demo's closing predictions and `make test`'s browser step."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = (REPO / "Makefile").read_text()


def test_the_demo_prints_each_clips_true_class_beside_the_prediction_and_marks_a_wrong_one(tmp_path):
    script = re.search(r"^define DEMO_VERDICT\n(.*?)^endef$", MAKEFILE, flags=re.S | re.M).group(1)
    assert '"$$DEMO_VERDICT"' in MAKEFILE.split("\ndemo:", 1)[1].split("\n\n", 1)[0]  # the demo's own step runs it
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps([
        {"video": "demo/data/UCF-101/GrowingDisk/v_GrowingDisk_g01_c01.avi",
         "top": [{"class": "GrowingDisk", "probability": 0.91}, {"class": "ShrinkingDisk", "probability": 0.05}]},
        {"video": "demo/data/UCF-101/ShrinkingDisk/v_ShrinkingDisk_g01_c01.avi",
         "top": [{"class": "GrowingDisk", "probability": 0.62}]}]))
    done = subprocess.run([sys.executable, "-c", script, str(predictions)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    right, wrong = done.stdout.splitlines()
    assert right.split() == ["v_GrowingDisk_g01_c01.avi", "true", "GrowingDisk", "predicted", "GrowingDisk", "0.9100", "right"]
    assert wrong.split() == ["v_ShrinkingDisk_g01_c01.avi", "true", "ShrinkingDisk", "predicted", "GrowingDisk", "0.6200",
                             "WRONG"]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_without_chromium_and_apt_make_test_says_in_one_line_that_the_browser_tests_are_skipped(tmp_path):
    """No chromium and no apt-get on the PATH: the browser step says so in one line, and make test goes on."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "id"):
        (bare / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([shutil.which("make"), "-s", "browser", "CHROMIUM_FOUND=false"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PATH": str(bare)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "make test: no chromium, so the browser tests of tests/test_report_page.py are skipped; to run them, install "
        "it (as root on Debian: apt-get install chromium) and run make test again"]
