"""report.html: one self-contained page per run (and for several runs, and for windowed predictions), opened in a
real headless Chromium (Debian's, driven by Playwright; no browser is downloaded): no console error, no network
request, every class there, the numbers of metrics.json, every image loaded, a confusion cell's clips on click.
Names are text: a folder class named like an HTML tag shows as those characters and runs nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import QUIET, TINY, browse, needs_browser, run_record, tiny_config
from ucfpipe.stage_two import report, report_page, runs, setups

EVIL = "<img src=x onerror=alert(1)>"


# -- the page without a browser ---------------------------------------------------------------------------------
def test_misclassified_clips_come_worst_confusion_first():
    clips = {"clips": [
        {"id": "a1", "true": 0, "top": [[1, 0.6]], "frames": []},   # cell (0, 1): 1 clip
        {"id": "b1", "true": 1, "top": [[2, 0.5]], "frames": []},   # cell (1, 2): 2 clips
        {"id": "b2", "true": 1, "top": [[2, 0.9]], "frames": []},
        {"id": "ok", "true": 2, "top": [[2, 0.9]], "frames": []},
    ]}
    confusion = [[0, 1, 0], [0, 0, 2], [0, 0, 1]]
    assert [c["id"] for c in report_page.misclassified(clips, confusion)] == ["b2", "b1", "a1"]


def write_metrics(directory: Path, split: int, top1: float, tta: float | None = None, blind: float | None = None) -> None:
    directory.mkdir(parents=True)
    metrics = {"split": split, "dataset": "ucf101", "top1": top1, "top5": 0.9, "mean_class_accuracy": top1,
               "num_test_clips": 10, "fingerprint": "f"}
    if tta is not None:
        metrics["tta"] = {"top1": tta, "top5": 0.9, "mean_class_accuracy": tta}
    if blind is not None:
        metrics["order_blind_top1"] = blind
    (directory / runs.METRICS).write_text(json.dumps(metrics))


def test_protocol_table_reads_each_setup_and_lists_the_published_rows_with_sources(tmp_path):
    for split, shift in ((1, 0.0), (2, 0.02), (3, 0.04)):
        write_metrics(tmp_path / f"split{split}" / "lstm", split, 0.70 + shift, blind=0.5)
        write_metrics(tmp_path / f"split{split}" / "aug", split, 0.72 + shift, tta=0.73 + shift)
        write_metrics(tmp_path / f"split{split}" / "ensemble", split, 0.74 + shift, tta=0.76 + shift)
    table = report.protocol_table(tmp_path)
    text = report.protocol_markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| setup (top-1 %) | split 1 | split 2 | split 3 | mean ± std |"
    assert "| LSTM (centre view) | 70.0 | 72.0 | 74.0 | 72.0 ± 2.0 |" in lines
    assert "| + test-time augmentation | 73.0 | 75.0 | 77.0 | 75.0 ± 2.0 |" in lines
    assert "| + ensemble of 3 (with TTA) | 76.0 | 78.0 | 80.0 | 78.0 ± 2.0 |" in lines
    assert "| order-blind reference (time-averaged features) | 50.0 | 50.0 | 50.0 | 50.0 ± 0.0 |" in lines
    for number, published in enumerate(report.PUBLISHED, 1):
        assert f"| {published['row']} [{number}] |" in text and f"[{number}] {published['source']}" in text


def test_protocol_refuses_a_setup_evaluated_without_tta(tmp_path):
    from ucfpipe.core.errors import UcfpipeError

    write_metrics(tmp_path / "split1" / "lstm", 1, 0.7)
    write_metrics(tmp_path / "split1" / "aug", 1, 0.7)  # no --tta
    write_metrics(tmp_path / "split1" / "ensemble", 1, 0.7, tta=0.7)
    with pytest.raises(UcfpipeError, match="without --tta; rerun `ucfpipe eval"):
        report.protocol_table(tmp_path)


# -- runs with a hostile class name, in a browser ------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated(synth_dataset, tmp_path_factory):
    """The synthetic videos as a folders dataset whose first class folder is named like an HTML tag; two
    evaluated runs of split 1 (seeds 1, 2)."""
    from ucfpipe.datasets.folders import make_lists
    from ucfpipe.stage_two import evaluate, train

    root = tmp_path_factory.mktemp("evil")
    videos = root / "videos"
    shutil.copytree(synth_dataset["videos"], videos)
    first = sorted(p for p in videos.iterdir() if p.is_dir())[0]
    first.rename(videos / EVIL)
    make_lists(videos, root / "lists", seed=0)
    from ucfpipe.config import ExtractConfig
    from ucfpipe.stage_one import extract

    cache = root / "features"
    extract.run(ExtractConfig(videos=str(videos), splits=str(root / "lists"), out=str(cache), dataset="folders", **TINY),
                progress=False, log=lambda *_: None)
    run_dirs = []
    for seed in (1, 2):
        out = root / f"run{seed}"
        train.run(tiny_config(cache, root / "lists", out, seed=seed, epochs=4), **QUIET)
        evaluate.run(out, baseline=True, log=lambda *_: None)
        run_dirs.append(out)
    return {"root": root, "videos": videos, "runs": run_dirs}


def load_images(page) -> list:
    """Reveal every hidden clip, then each image's (alt, natural width) once it has decoded."""
    while page.locator("button.more:visible").count():
        page.locator("button.more:visible").first.click()
    return page.evaluate("""async () => {
        const images = Array.from(document.images);
        await Promise.all(images.map(i => i.decode().catch(() => null)));
        return images.map(i => [i.alt, i.naturalWidth]);
    }""")


@pytest.mark.slow
def test_a_hostile_class_name_is_text_in_the_page_source(evaluated):
    text = (evaluated["runs"][0] / report_page.PAGE).read_text()
    assert EVIL not in text  # never as markup, anywhere (the JSON holds it \u003c-escaped)
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text


@pytest.mark.slow
@needs_browser
def test_run_page_in_a_browser(evaluated, tmp_path):
    run = evaluated["runs"][0]
    metrics = json.loads((run / runs.METRICS).read_text())
    clips = json.loads((run / report_page.CLIPS_FILE).read_text())["clips"]
    classes = json.loads((run / runs.RUN).read_text())["classes"]
    assert EVIL in classes
    wrong = [c for c in clips if c["top"][0][0] != c["true"]]
    assert wrong, "the tiny run must misclassify some clips for this test to click one"
    cell = (wrong[0]["true"], wrong[0]["top"][0][0])
    expected = sorted(c["id"] for c in clips if (c["true"], c["top"][0][0]) == cell)

    def actions(page):
        headline = {key: page.locator(f'#headline td[data-run="0"][data-metric="{key}"]').inner_text()
                    for key, _ in report_page.HEADLINE if key in metrics}
        per_class = page.locator("tr.pc td:first-child").all_inner_texts()
        rows = page.locator("#confusion-0 th").all_inner_texts()
        page.locator(f'#confusion-0 td[data-t="{cell[0]}"][data-p="{cell[1]}"]').click()
        listed = page.locator("#cellclips-0 li.cellclip").all_inner_texts()
        return {"headline": headline, "per_class": per_class, "rows": rows, "listed": listed, "images": load_images(page)}

    seen = browse(run / report_page.PAGE, tmp_path, "report-run", actions)
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == []
    assert seen["requests"] == []
    assert seen["headline"] and all(seen["headline"][k] == f"{metrics[k]:.4f}" for k in seen["headline"])
    assert set(seen["headline"]) >= {"top1", "top5", "mean_class_accuracy", "macro_f1", "order_blind_top1"}
    assert sorted(seen["per_class"]) == sorted(classes) and seen["rows"] == classes
    assert sorted(text.rsplit(" (", 1)[0] for text in seen["listed"]) == expected
    assert seen["images"] and all(width > 0 for _, width in seen["images"])
    assert (tmp_path / "report-run.png").stat().st_size > 10_000


@pytest.mark.slow
@needs_browser
def test_several_runs_on_one_page_with_mean_and_std(evaluated, tmp_path):
    from click.testing import CliRunner

    from ucfpipe.cli import main

    page = tmp_path / "runs.html"
    result = CliRunner().invoke(main, ["report", *map(str, evaluated["runs"]), "--html", str(page)])
    assert result.exit_code == 0, result.output
    top1 = [json.loads((r / runs.METRICS).read_text())["top1"] for r in evaluated["runs"]]

    def actions(page_):
        return {"mean": page_.locator('#headline td[data-metric="top1"][data-mean]').get_attribute("data-mean"),
                "sections": page_.locator("h2").count(), "images": load_images(page_)}

    seen = browse(page, tmp_path, "report-runs", actions)
    assert seen["console"] == [] and seen["errors"] == [] and seen["requests"] == [] and seen["dialogs"] == []
    assert seen["mean"] == f"{sum(top1) / 2:.4f}" and seen["sections"] == 2
    assert all(width > 0 for _, width in seen["images"])


@pytest.mark.slow
def test_without_the_videos_the_page_says_so_and_shows_no_frames(evaluated, tmp_path):
    moved = evaluated["root"] / "moved-away"
    evaluated["videos"].rename(moved)
    try:
        text = report_page.render([evaluated["runs"][0]])
    finally:
        moved.rename(evaluated["videos"])
    assert "the videos are not on disk at" in text
    assert "<img" not in text


@pytest.mark.slow
@needs_browser
def test_windowed_prediction_page(evaluated, tmp_path):
    from click.testing import CliRunner

    from ucfpipe.cli import main

    video = sorted((evaluated["videos"] / EVIL).iterdir())[0]
    out = tmp_path / "windows"
    result = CliRunner().invoke(main, ["predict", str(video), "--run", str(evaluated["runs"][0]), "--window", "0.5",
                                       "--stride", "0.25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out / video.stem / "report.html"
    windows = (out / video.stem / "windows.csv").read_text().splitlines()[1:]

    def actions(page_):
        return {"rows": page_.locator("tr.window").count(), "images": load_images(page_),
                "text": page_.locator("body").inner_text()}

    seen = browse(page, tmp_path, "report-windows", actions)
    assert seen["console"] == [] and seen["errors"] == [] and seen["requests"] == [] and seen["dialogs"] == []
    assert seen["rows"] == len(windows) and len(seen["images"]) == len(windows)
    assert all(width > 0 for _, width in seen["images"])
    assert EVIL in seen["text"]  # the class name shows as its characters


def test_a_ucf101_sized_page_stays_small(tmp_path):
    """101 classes, 3,783 test clips (split 1's size), no videos on disk: the clip list, the matrix and the
    tables alone must leave room for the thumbnails (at most 40 strips of 8, about 2 KB each) in a few MB."""
    import numpy as np

    rng = np.random.default_rng(0)
    classes = [f"Class{i:03d}" for i in range(101)]
    run = tmp_path / "run"
    run.mkdir()
    clips = []
    for n in range(3783):
        true = n % 101
        top = rng.choice(101, 3, replace=False).tolist() if n % 4 == 0 else [true, (true + 1) % 101, (true + 2) % 101]
        clips.append({"id": f"{classes[true]}/v_{classes[true]}_g{n % 7 + 1:02d}_c{n:04d}", "video": "x.avi", "true": true,
                      "top": [[k, 0.5] for k in top], "frames": list(range(40))})
    (run / report_page.CLIPS_FILE).write_text(json.dumps({"format": report_page.CLIPS_FORMAT, "videos": "", "clips": clips}))
    (run / runs.METRICS).write_text(json.dumps({"split": 1, "dataset": "ucf101", "top1": 0.75, "top5": 0.9,
                                                "mean_class_accuracy": 0.75, "macro_f1": 0.74, "num_test_clips": 3783}))
    (run / runs.RUN).write_text(json.dumps(run_record(classes)))
    (run / runs.CONFIG).write_text("{}")
    (run / runs.PER_CLASS).write_text("class,accuracy,precision,recall,f1,support\n"
                                      + "".join(f"{c},0.75,0.75,0.75,0.75,37\n" for c in classes))
    size = len(report_page.render([run]).encode())
    assert size < 2.5 * 2**20, f"{size / 2**20:.2f} MiB before any thumbnail"


def test_runs_of_different_setups_get_no_mean_on_the_page(tmp_path):
    """The protocol page holds several setups per split: averaging them would mix the setups; runs of one
    setup over splits or seeds get their mean ± std (the rule: ucfpipe.stage_two.setups)."""
    from ucfpipe.stage_two.report_page import _headline

    def row(number, split, seed, top1, **config):
        metrics = {"split": split, "top1": top1, "num_test_clips": 10, "fingerprint": "f"}
        directory = tmp_path / f"run{number}"
        directory.mkdir()
        (directory / runs.RUN).write_text(json.dumps(run_record(["a", "b"], split)))
        (directory / runs.CONFIG).write_text(json.dumps({"split": split, "seed": seed, "out": f"runs/{number}",
                                                          "units": 64, **config}))
        return {"name": f"run{number}", "directory": directory, "metrics": metrics,
                "setup": setups.of_run(directory, metrics)}

    one_setup = [row(1, 1, 1, 0.5), row(2, 2, 2, 0.7), row(3, 1, 3, 0.9)]
    assert 'data-mean="0.7000"' in _headline(one_setup)
    mixed = [*one_setup, row(4, 1, 1, 0.2, train_views="all")]
    assert "no mean ± std" in _headline(mixed) and "data-mean" not in _headline(mixed)
