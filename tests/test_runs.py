"""What runs, caches and pages record: paths absolute (so every command means the same from any folder), a
recorded path that is gone named with the flag that points elsewhere, run files of the wrong shape refused in
one line naming the file, and a report page that says when a clip's video changed since extraction."""

import json
import shutil
from pathlib import Path

import pytest

from helpers import QUIET, assert_one_line_error, invoke, tiny_config, tiny_flags
from ucfpipe.cache.format import MANIFEST
from ucfpipe.stage_two import evaluate, report_page, runs, train

TRAIN_FLAGS = ["--units", 8, "--epochs", 2, "--batch-size", 8, "--val-groups", 1, "--learning-rate", 3e-3]


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def interrupt_after_first_epoch(monkeypatch):
    original = train.RunKeeper.on_epoch_end

    def stop(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train.RunKeeper, "on_epoch_end", stop)
    return lambda: monkeypatch.setattr(train.RunKeeper, "on_epoch_end", original)


# -- the whole pipeline on relative paths, continued from another folder ----------------------------------------
@pytest.mark.slow
def test_a_pipeline_on_relative_paths_goes_on_from_any_folder(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    ok(invoke("synth", "data", "--groups", 3, "--clips-per-group", 2))
    ok(invoke("extract", "--videos", "data/UCF-101", "--splits", "data/ucfTrainTestlist", "--out", "features", *tiny_flags()))
    inputs = ["--features", "features", "--splits", "data/ucfTrainTestlist", *TRAIN_FLAGS]
    ok(invoke("train", *inputs, "--out", "run"))
    ok(invoke("eval", "--run", "run"))
    ok(invoke("report", "run", "--html", "page.html"))
    video = next(Path("data/UCF-101").glob("*/*.avi"))
    here = json.loads(ok(invoke("predict", "--run", "run", video, "--json")).stdout)
    restore = interrupt_after_first_epoch(monkeypatch)
    assert invoke("train", *inputs, "--out", "stopped").exit_code == 130
    restore()

    manifest = json.loads((project / "features" / MANIFEST).read_text())
    config = json.loads((project / "run" / runs.CONFIG).read_text())
    assert manifest["config"]["videos"] == str(project / "data" / "UCF-101")
    assert config["features"] == str(project / "features") and config["out"] == str(project / "run")

    monkeypatch.chdir(elsewhere)  # every later command, from another folder, on the paths the records hold
    ok(invoke("train", "--resume", "--out", project / "stopped"))
    for run in (project / "run", project / "stopped"):
        ok(invoke("eval", "--run", run))
        assert json.loads((run / report_page.CLIPS_FILE).read_text())["videos"] == str(project / "data" / "UCF-101")
    ok(invoke("report", project / "run", project / "stopped", "--html", "page.html"))
    page = (elsewhere / "page.html").read_text()
    assert "are not on disk" not in page and "<img" in page
    assert json.loads(ok(invoke("predict", "--run", project / "run", project / video, "--json")).stdout)[0]["top"] == here[0]["top"]
    ok(invoke("export", "--run", project / "run", "--out", "exported"))
    assert (elsewhere / "exported" / "model.keras").is_file()


# -- recorded paths that are gone ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moved_run(synth_cache, synth_dataset, tmp_path_factory):
    """A finished, evaluated run on its own copies of the cache and split files (tests move them away)."""
    root = tmp_path_factory.mktemp("moved")
    shutil.copytree(synth_cache, root / "features")
    shutil.copytree(synth_dataset["splits"], root / "lists")
    train.run(tiny_config(root / "features", root / "lists", root / "run", epochs=1), **QUIET)
    evaluate.run(root / "run", log=lambda *_: None)
    return root


@pytest.mark.parametrize("folder, flag", [("features", "--features"), ("lists", "--splits")])
def test_eval_names_a_recorded_folder_that_is_gone_and_the_flag_for_its_new_place(moved_run, folder, flag):
    (moved_run / folder).rename(moved_run / f"{folder}-moved")
    try:
        result = invoke("eval", "--run", moved_run / "run")
        again = invoke("eval", "--run", moved_run / "run", flag, moved_run / f"{folder}-moved")
    finally:
        (moved_run / f"{folder}-moved").rename(moved_run / folder)
    assert_one_line_error(result, f"{moved_run / folder} recorded by run {moved_run / 'run'} is gone; "
                                  f"if it moved, pass {flag} with where it is now")
    assert again.exit_code == 0, again.output


def test_resume_names_a_recorded_cache_that_is_gone(moved_run, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(moved_run / "run", stopped)
    record = json.loads((stopped / runs.RUN).read_text())
    record.update(status="running", cache={**record["cache"], "directory": str(tmp_path / "gone")})
    (stopped / runs.RUN).write_text(json.dumps(record))
    assert_one_line_error(invoke("train", "--resume", "--out", stopped),
                          f"the feature cache {tmp_path / 'gone'} recorded by run {stopped} is gone; if it moved, pass --features")


def test_an_old_cache_with_relative_paths_finds_its_videos_from_where_extract_ran(synth_cache, tmp_path, monkeypatch):
    from ucfpipe.cache.store import FeatureStore

    project = tmp_path / "project"
    shutil.copytree(synth_cache, project / "out" / "features")
    manifest = json.loads((project / "out" / "features" / MANIFEST).read_text())
    manifest["config"].update(videos="data/UCF-101", out="out/features")  # as a cache made before paths were absolute
    (project / "out" / "features" / MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    assert FeatureStore(project / "out" / "features").recorded_path("videos") == project / "data" / "UCF-101"


# -- run files of the wrong shape --------------------------------------------------------------------------------
def valid_run(directory: Path) -> Path:
    """A run directory as report and its page read it (no model: neither loads one)."""
    directory.mkdir()
    files = {
        runs.RUN: {"format": runs.FORMAT, "status": "finished", "split": 1, "splits_dir": "/lists", "classes": ["a", "b"],
                   "best": {"epoch": 1}, "cache": {"directory": "/features", "fingerprint": "f", "settings": {},
                                                   "extract_config": {}}},
        runs.CONFIG: {"seed": 0},
        runs.METRICS: {"top1": 0.5, "top5": 1.0, "mean_class_accuracy": 0.5, "split": 1, "num_test_clips": 2,
                       "dataset": "ucf101", "backbone": "vgg16"},
    }
    for name, value in files.items():
        (directory / name).write_text(json.dumps(value))
    return directory


WRONG_METRICS = [
    ({}, "has no 'top1' (a number was expected)"),
    ([], "holds a list where a JSON object was expected"),
    ({"top1": "x"}, "'top1' is text (\"x\") where a number was expected"),
    ({"top1": 0.5, "top5": 1.0, "mean_class_accuracy": 0.5, "split": 1, "num_test_clips": 2, "tta": {}}, "has no 'tta.top1'"),
]
WRONG_FOR_THE_PAGE = [  # the page reads these too; the text table only metrics.json
    (runs.RUN, [], "holds a list where a JSON object was expected"),
    (runs.RUN, {"format": runs.FORMAT, "status": "finished"}, "has no 'split' (an integer was expected)"),
    (runs.CONFIG, [], "holds a list where a JSON object was expected"),
    (report_page.CLIPS_FILE, {"format": report_page.CLIPS_FORMAT, "videos": "", "clips": [{"id": "a"}]}, "has no 'video'"),
]


@pytest.mark.parametrize("command, name, content, expected",
                         [(command, runs.METRICS, *case) for command in ("report", "report --html") for case in WRONG_METRICS]
                         + [("report --html", *case) for case in WRONG_FOR_THE_PAGE])
def test_a_run_file_of_the_wrong_shape_is_one_line_naming_it(tmp_path, command, name, content, expected):
    run = valid_run(tmp_path / "run")
    (run / name).write_text(json.dumps(content))
    result = invoke(*command.split(), *([tmp_path / "page.html"] if "--html" in command else []), run)
    assert_one_line_error(result, f"{run / name}")
    assert expected in result.output


def test_a_per_class_table_with_a_word_for_an_accuracy_is_one_line_naming_it(tmp_path):
    run = valid_run(tmp_path / "run")
    (run / runs.PER_CLASS).write_text("class,accuracy,precision,recall,f1,support\na,high,1,1,1,3\n")
    assert_one_line_error(invoke("report", "--html", tmp_path / "page.html", run),
                          f"{run / runs.PER_CLASS} has a row without class, accuracy (a number) and support")


def test_eval_on_a_run_json_of_the_wrong_shape_is_one_line(tmp_path):
    run = valid_run(tmp_path / "run")
    (run / runs.RUN).write_text("[]")
    assert_one_line_error(invoke("eval", "--run", run), f"{run / runs.RUN} holds a list where a JSON object was expected")


# -- the report page and a video that changed since extraction ---------------------------------------------------------
def test_the_page_says_when_a_clips_video_changed_since_extraction(moved_run, synth_dataset, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(moved_run / "run", run)
    videos = tmp_path / "videos"
    shutil.copytree(synth_dataset["videos"], videos)  # copy2: sizes and mtimes kept, so unchanged
    clips = json.loads((run / report_page.CLIPS_FILE).read_text())
    assert all("source" in clip for clip in clips["clips"])
    for clip in clips["clips"]:  # every clip shown as misclassified, so each gets its frames (or a note)
        clip["top"][0][0] = (clip["true"] + 1) % 6
    clips["videos"] = str(videos)
    (run / report_page.CLIPS_FILE).write_text(json.dumps(clips))
    assert len(clips["clips"]) <= report_page.STRIPS  # each gets frames (or the note)
    changed = videos / clips["clips"][0]["video"]
    size = changed.stat().st_size
    with changed.open("ab") as handle:
        handle.write(b"\0" * 10)

    page = report_page.render([run])
    assert page.count("the video changed since its features were extracted") == 1
    assert f"size {size} -&gt; {size + 10} bytes" in page
    assert page.count('<div class="strip">') == len(clips["clips"]) - 1


def test_a_run_answers_what_reports_ask_of_its_record(tmp_path):
    """Reports, setups, the page and resume ask a Run, not run.json's keys: an old record without "dataset"
    takes its cache's word; relocating for a resume leaves the read record as it was."""
    from helpers import run_record

    (tmp_path / runs.RUN).write_text(json.dumps(run_record(
        ["a", "b"], cache={"directory": "/features", "fingerprint": "f", "settings": {},
                           "extract_config": {"dataset": "hmdb51", "backbone": "resnet50"}},
        data={"val_groups": [3]}, versions={"keras": "3"})))
    (tmp_path / runs.CONFIG).write_text(json.dumps({"units": 64, "seed": 2}))
    run = runs.Run(tmp_path)
    assert (run.dataset, run.backbone, run.data, run.versions) == ("hmdb51", "resnet50", {"val_groups": [3]}, {"keras": "3"})
    assert run.settings == {"units": 64, "seed": 2} and run.config.units == 64
    moved = run.relocated(tmp_path / "elsewhere", tmp_path / "lists")
    assert moved["cache"]["directory"] == str(tmp_path / "elsewhere") and moved["splits_dir"] == str(tmp_path / "lists")
    assert run.record["cache"]["directory"] == "/features" and run.record["splits_dir"] == "/lists"
