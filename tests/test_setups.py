"""One rule for "one setup" (same dataset, classes, cache and training settings; only split and seed differ):
the text report, its markdown and the HTML page give the same verdict for the same runs, and the top-k of a
run with fewer than 5 classes is called by the k it used."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from helpers import EVALUATED_CLASSES as CLASSES, evaluated, invoke, reports
from ucfpipe.stage_two import report, runs
from ucfpipe.stage_two.plots import plot_confusion

def test_runs_of_one_setup_over_splits_get_a_mean_in_every_report(tmp_path):
    dirs = [evaluated(tmp_path / f"split{s}", s, top1, memory_limit_gb=s) for s, top1 in ((1, 0.8), (2, 0.7), (3, 0.9))]
    said = reports(dirs, tmp_path)
    assert "0.8000 ± 0.1000" in said["text"] and "over 3 runs" in said["text"]
    assert "| mean ± std |" in said["markdown"] and "| 0.800 ± 0.100 |" in said["markdown"]
    assert 'data-mean="0.8000"' in said["html"]
    assert not any("no mean" in words for words in said.values())


@pytest.mark.parametrize("case, why", [
    ("class lists", "they have different class lists (4 classes: {a}; 6 classes: {b})"),
    ("settings", "they were trained with different settings (--units 64 in {a}, 128 in {b})"),
    ("caches", "they used feature caches of different fingerprints (f0: {a}; f1: {b})"),
])
def test_runs_that_are_not_one_setup_get_no_mean_and_the_same_line_why_in_every_report(tmp_path, case, why):
    a = evaluated(tmp_path / "a", 1, 0.8, classes=CLASSES[:4] if case == "class lists" else CLASSES)
    changed = {"class lists": {}, "settings": {"units": 128}, "caches": {"fingerprint": "f1"}}[case]
    b = evaluated(tmp_path / "b", 2, 0.6, **changed)
    line = "no mean ± std: the runs are not one setup: " + why.format(a=a, b=b)
    said = reports([a, b], tmp_path)
    assert said["text"].strip().splitlines()[-1] == line
    assert f"note: {line}" in said["markdown notes"]
    assert line in said["html"] and "data-mean" not in said["html"]
    assert "mean ± std |" not in said["markdown"] and "0.7000" not in said["text"]


def test_an_ensemble_and_a_single_run_are_not_one_setup(tmp_path):
    single = evaluated(tmp_path / "single", 1, 0.8)
    members = tmp_path / "ensemble"
    for seed in (1, 2):
        evaluated(members / f"member-lstm-seed{seed}", 2, 0.8)
    (members / runs.METRICS).write_text((single / runs.METRICS).read_text())
    (members / "ensemble.json").write_text("{}")
    assert report.verdict(report.collect([single, members])) == (
        f"no mean ± std: the runs are not one setup: they were trained with different settings "
        f"(ensemble members 1 in {single}, 2 in {members})")


def test_the_protocol_table_gives_no_mean_for_a_setup_whose_splits_were_trained_differently(tmp_path):
    for split in (1, 2, 3):
        for folder in ("lstm", "aug", "ensemble"):
            run = evaluated(tmp_path / f"split{split}" / folder, split, 0.7, units=128 if (folder, split) == ("lstm", 2) else 64)
            metrics = json.loads((run / runs.METRICS).read_text())
            (run / runs.METRICS).write_text(json.dumps({**metrics, "tta": metrics}))
    text = report.protocol_markdown(report.protocol_table(tmp_path))
    lstm = tmp_path / "split{}" / "lstm"
    assert "| LSTM (centre view) | 70.0 | 70.0 | 70.0 | – |" in text
    assert "| + augmentation views | 70.0 | 70.0 | 70.0 | 70.0 ± 0.0 |" in text
    assert (f"Note: LSTM (centre view): no mean ± std: the runs are not one setup: they were trained with different "
            f"settings (--units 64 in {str(lstm).format(1)}, {str(lstm).format(3)}, 128 in {str(lstm).format(2)}).") in text


def test_top5_of_a_run_of_fewer_classes_is_called_by_its_k_everywhere(tmp_path):
    dirs = [evaluated(tmp_path / f"split{s}", s, 0.8, classes=CLASSES[:4]) for s in (1, 2)]
    said = reports(dirs, tmp_path)
    assert "top-4" in said["text"].splitlines()[0] and "| LSTM top-4 |" in said["markdown"]
    assert ">top-4<" in said["html"] and "top-1 and top-4: share" in said["html"]
    assert not any("top-5" in words for words in said.values())


def test_an_old_metrics_file_without_top5_k_takes_its_k_from_the_runs_classes(tmp_path):
    run = evaluated(tmp_path / "old", 1, 0.8, classes=CLASSES[:3])
    metrics = json.loads((run / runs.METRICS).read_text())
    del metrics["top5_k"]
    (run / runs.METRICS).write_text(json.dumps(metrics))
    assert "top-3" in invoke("report", run).stdout


def test_a_class_name_in_chinese_draws_without_a_warning(tmp_path):
    path = tmp_path / "confusion.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_confusion(np.array([[2, 1], [0, 3]]), ["跳舞", "Biking"], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_made_before_a_setting_existed_is_one_setup_with_a_new_run_at_its_default(tmp_path):
    """`heads` came with the transformer cell: an older LSTM run's config.json lacks it, a new one records 4."""
    old = evaluated(tmp_path / "split1", 1, 0.8)
    new = evaluated(tmp_path / "split2", 2, 0.7, heads=4)
    said = reports([old, new], tmp_path)
    assert "over 2 runs" in said["text"] and not any("no mean" in words for words in said.values())
    other = evaluated(tmp_path / "split3", 3, 0.9, heads=2)
    assert "--heads" in invoke("report", old, other).output  # a real difference is still named
