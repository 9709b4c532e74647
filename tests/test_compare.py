"""`ucfpipe compare` at tiny size: every row in the printed and written table."""

import json

import pytest

from helpers import invoke


@pytest.mark.slow
def test_compare_prints_and_writes_a_table_with_every_row(synth_cache, synth_dataset, tmp_path):
    out = tmp_path / "compare"
    result = invoke("compare", "--features", str(synth_cache), "--splits", str(synth_dataset["splits"]),
                    "--out", str(out), "--units", "8", "--epochs", "1", "--batch-size", "8",
                    "--val-groups", "1", "--members", "2")
    assert result.exit_code == 0, result.output
    table = (out / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| setup")]
    names = ["baseline", "+ training augmentation", "+ TTA", "+ 2-seed ensemble", "order-blind"]
    assert len(rows) == len(names)
    for name, row in zip(names, rows):
        assert row.startswith(f"| {name}"), row
        assert row in result.output
    assert "| setup | top-1 | top-" in table and "mean class acc. | wall s |" in table
    saved = json.loads((out / "compare.json").read_text())
    assert [r["setup"].split(" (")[0] for r in saved["rows"]][0] == "baseline"
    assert all(0.0 <= r["top1"] <= 1.0 and r["seconds"] >= 0 for r in saved["rows"])
    assert (out / "ensemble" / "ensemble.json").is_file() and (out / "baseline" / "metrics.json").is_file()


def test_compare_refuses_a_used_directory(synth_cache, synth_dataset, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    result = invoke("compare", "--features", str(synth_cache), "--splits", str(synth_dataset["splits"]),
                    "--out", str(tmp_path), "--units", "8", "--epochs", "1")
    assert result.exit_code == 2 and "not an empty directory" in result.output.strip().splitlines()[-1]
