"""Every command that writes a named output goes through core/files, so none replaces what is not a regular file:
a character device (one made with mknod, and /dev/null itself) stays a device and gets the bytes, a FIFO gets
them, a link keeps pointing where it did while its file is replaced, `-` is standard output where one file is
written, and a folder, a block device, a missing or read-only folder is refused in one line before any work."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from helpers import FifoReader, assert_one_line_error, fill, invoke, make_nodes

METRICS = {"split": 1, "dataset": "ucf101", "top1": 0.5, "top5": 0.9, "mean_class_accuracy": 0.5, "num_test_clips": 10,
           "fingerprint": "f"}


@pytest.fixture
def nodes(tmp_path):
    return make_nodes(tmp_path / "nodes")


@pytest.fixture
def evaluated_run(tmp_path):
    """What `report` reads of a run: its metrics (the page notes what else is missing)."""
    run = tmp_path / "run1"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(METRICS))
    return run


def written(nodes, node, invoke_writing, expected: bytes):
    """Run the command writing to `nodes[node]` and check what it did there."""
    if node == "fifo":
        with FifoReader(nodes["fifo"]) as reader:
            result = invoke_writing(nodes["fifo"])
        assert result.exit_code == 0, result.output
        assert reader.data.startswith(expected) and stat.S_ISFIFO(os.lstat(nodes["fifo"]).st_mode)
        return
    result = invoke_writing(nodes[node])
    assert result.exit_code == 0, result.output
    if node == "device":
        assert stat.S_ISCHR(os.lstat(nodes["device"]).st_mode)
    else:  # a link, a link to a file not made yet: the link stays, the file it names holds the output
        assert nodes[node].is_symlink() and Path(os.path.realpath(nodes[node])).read_bytes().startswith(expected)
        assert [p.name for p in Path(os.path.realpath(nodes[node])).parent.iterdir() if ".tmp" in p.name] == []


REFUSED = {  # node: what the one line says after the option and path
    "folder": "is a folder, not a file; name a file in it or pass another",
    "block": "is a block device, not a file; name a file or pass another",
    "into_missing": "is a link to",
}


# -- report --html --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("node", ["device", "fifo", "link", "dangling"])
def test_report_html_writes_devices_and_fifos_in_place_and_follows_links(nodes, evaluated_run, node):
    written(nodes, node, lambda path: invoke("report", evaluated_run, "--html", path), b"<!DOCTYPE html>")


@pytest.mark.parametrize("node", list(REFUSED))
def test_report_html_refuses_a_folder_a_block_device_or_a_missing_folder_before_reading_any_run(nodes, tmp_path, node):
    mode = os.lstat(nodes[node]).st_mode
    result = invoke("report", tmp_path / "no-such-run", "--html", nodes[node])  # the run is never read
    assert_one_line_error(result, f"--html {nodes[node]} {REFUSED[node]}")
    assert os.lstat(nodes[node]).st_mode == mode


def test_report_html_into_a_missing_or_read_only_folder_names_the_folder_not_a_temporary(evaluated_run, tmp_path,
                                                                                         read_only_folder):
    result = invoke("report", evaluated_run, "--html", tmp_path / "out" / "multi.html")
    assert_one_line_error(result, f"--html {tmp_path}/out/multi.html: folder {tmp_path}/out does not exist; "
                                  "create the folder or pass another --html")
    result = invoke("report", evaluated_run, "--html", read_only_folder / "multi.html")
    assert_one_line_error(result, f"folder {read_only_folder} is on a read-only file system; make it writable or pass "
                                  "another --html")
    assert ".tmp" not in result.output


def test_report_html_dash_is_the_page_alone_on_standard_output(evaluated_run, tmp_path):
    result = invoke("report", evaluated_run, "--html", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>") and result.stdout.rstrip().endswith("</html>")
    assert "mean ± std" in result.stderr and "wrote the page to standard output" in result.stderr
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def test_report_html_dev_null_leaves_dev_null_a_device(evaluated_run):
    """The machine's own /dev/null (the defect replaced it with a file): repaired here if that ever comes back."""
    try:
        result = invoke("report", evaluated_run, "--html", "/dev/null")
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "report --html /dev/null replaced /dev/null"
    finally:
        if not stat.S_ISCHR(os.lstat("/dev/null").st_mode):
            os.unlink("/dev/null")
            os.mknod("/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            os.chmod("/dev/null", 0o666)


# -- bench --json-out (the measurement replaced by a stand-in: what is tested is where its JSON goes) -------------
@pytest.fixture
def instant_bench(monkeypatch):
    from ucfpipe.bench import extract

    monkeypatch.setattr(extract, "run", lambda *args, **kwargs: {"frames_per_second": 1.0})
    monkeypatch.setattr(extract, "format_table", lambda results: "the table")


@pytest.mark.parametrize("node", ["device", "fifo", "link", "dangling"])
def test_bench_json_out_writes_devices_and_fifos_in_place_and_follows_links(nodes, instant_bench, node):
    written(nodes, node, lambda path: invoke("bench", "extract", "--json-out", path), b'{\n  "frames_per_second": 1.0')


@pytest.mark.parametrize("node", list(REFUSED))
def test_bench_json_out_refuses_before_measuring(nodes, monkeypatch, node):
    from ucfpipe.bench import extract

    monkeypatch.setattr(extract, "run", lambda *args, **kwargs: pytest.fail("measured before --json-out was checked"))
    assert_one_line_error(invoke("bench", "extract", "--json-out", nodes[node]), f"--json-out {nodes[node]} {REFUSED[node]}")


def test_bench_json_out_dash_is_the_json_alone_on_standard_output(instant_bench):
    result = invoke("bench", "extract", "--json-out", "-")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"frames_per_second": 1.0} and "the table" in result.stderr


# -- folders as outputs: predict --out, export --out, splits make --out -------------------------------------------
@pytest.mark.parametrize("node", ["device", "fifo", "block", "link"])
@pytest.mark.parametrize("command", ["predict", "export", "splits make"])
def test_an_output_folder_that_is_a_device_fifo_or_file_is_refused_before_any_work(nodes, tmp_path, node, command):
    video = tmp_path / "v.avi"
    video.write_bytes(b"never decoded: the refusal comes first")
    args = {"predict": ["predict", video, "--run", tmp_path / "no-run", "--window", "auto", "--out", nodes[node]],
            "export": ["export", "--run", tmp_path / "no-run", "--out", nodes[node]],
            "splits make": ["splits", "make", "--videos", tmp_path, "--out", nodes[node]]}[command]
    mode = os.lstat(nodes[node]).st_mode
    result = invoke(*args)
    assert result.exit_code == 2 and "not a" in result.output and "Traceback" not in result.output, result.output
    assert os.lstat(nodes[node]).st_mode == mode and (nodes["link"].parent / "elsewhere" / "real.out").read_text() == "old\n"


def test_export_out_dev_null_is_refused_and_dev_null_stays_a_device(tmp_path):
    result = invoke("export", "--run", tmp_path / "no-run", "--out", "/dev/null")
    assert_one_line_error(result, "--out /dev/null is a character device, not a folder; pass another --out")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_export_and_predict_into_a_read_only_folder_blame_the_folder_before_the_run_is_read(tmp_path, read_only_folder):
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    line = f"folder {read_only_folder} is on a read-only file system; make it writable or pass another --out"
    assert_one_line_error(invoke("export", "--run", tmp_path / "no-run", "--out", read_only_folder / "model"), line)
    assert_one_line_error(invoke("predict", video, "--run", tmp_path / "no-run", "--out", read_only_folder / "w"), line)


def test_a_full_disk_during_predict_window_out_leaves_no_folder(small_disk):
    """All four files of a video or none: no half folder, and no empty --out folder made for them."""
    from ucfpipe.core.files import DiskFull
    from ucfpipe.serving import windows

    prediction = windows.WindowedPrediction(
        "clip.avi", classes=("a", "b"), duration=4.0, num_frames=100,
        windows=[windows.Window(start, start + 2.0, np.array([0.7, 0.3])) for start in (0.0, 1.0, 2.0)])
    fill(small_disk)
    with pytest.raises(DiskFull):
        windows.write_outputs(prediction, small_disk / "out" / "clip", top=2)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# -- live --out ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["folder", "missing folder", "dangling into a missing folder", "dash", "block"])
def test_live_out_is_refused_in_one_line_before_the_source_opens(nodes, tmp_path, case):
    os.mkdir(tmp_path / "a.mp4")
    os.symlink(tmp_path / "missing" / "b.mp4", tmp_path / "b.mp4")
    os.symlink(nodes["block"], tmp_path / "c.mp4")
    out, said = {"folder": (tmp_path / "a.mp4", "is a folder, not a file"),
                 "missing folder": (tmp_path / "missing" / "a.mp4", f"folder {tmp_path}/missing does not exist; create "
                                                                    "the folder or pass another --out"),
                 "dangling into a missing folder": (tmp_path / "b.mp4", "is a link to"),
                 "dash": ("-", "--out cannot be - (standard output) here"),
                 "block": (tmp_path / "c.mp4", "is a block device, not a file")}[case]
    result = invoke("live", "--run", tmp_path / "no-run", "--source", tmp_path / "no-source.avi", "--out", out)
    assert_one_line_error(result, said)


def test_live_out_into_a_read_only_folder_blames_the_folder_not_a_codec(tmp_path, read_only_folder):
    result = invoke("live", "--run", tmp_path / "no-run", "--source", "0", "--out", read_only_folder / "a.mp4")
    assert_one_line_error(result, f"--out {read_only_folder}/a.mp4: folder {read_only_folder} is on a read-only file "
                                  "system; make it writable or pass another --out")


def test_finetune_out_that_is_a_device_is_refused_before_keras_loads(tmp_path):
    os.symlink("/dev/null", tmp_path / "b.weights.h5")
    result = invoke("finetune", "--videos", tmp_path, "--splits", tmp_path, "--out", tmp_path / "b.weights.h5")
    assert_one_line_error(result, f"--out {tmp_path}/b.weights.h5 is a character device, not a file")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -- with a real run: the nodes get whole outputs -----------------------------------------------------------------
@pytest.fixture(scope="module")
def run_and_video(tiny_run, synth_dataset):
    return tiny_run, sorted(Path(synth_dataset["videos"]).rglob("*.avi"))[0]


@pytest.mark.slow
def test_live_out_a_device_stays_a_device_and_a_link_keeps_its_recording_behind_it(run_and_video, tmp_path):
    run, video = run_and_video
    device = tmp_path / "null.mp4"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (tmp_path / "recordings").mkdir()
    os.symlink(tmp_path / "recordings" / "real.mp4", tmp_path / "link.mp4")
    for out in (device, tmp_path / "link.mp4"):
        result = invoke("live", "--run", run, "--source", video, "--out", out)
        assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(device).st_mode) and (tmp_path / "link.mp4").is_symlink()
    assert (tmp_path / "recordings" / "real.mp4").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "recordings").iterdir()) == ["real.mp4"]


@pytest.mark.slow
def test_predict_window_out_through_a_link_to_a_folder_writes_there(run_and_video, tmp_path):
    run, video = run_and_video
    (tmp_path / "results").mkdir()
    os.symlink(tmp_path / "results", tmp_path / "out")
    result = invoke("predict", video, "--run", run, "--window", "auto", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out").is_symlink()
    assert sorted(p.name for p in (tmp_path / "results" / video.stem).iterdir()) == [
        "report.html", "seconds.csv", "timeline.png", "windows.csv"]
