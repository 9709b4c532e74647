"""Helpers the tests share (plain functions and constants; fixtures live in conftest.py). No test file imports
another: what two files need is here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner

from ucfpipe.cache.format import MANIFEST, file_sha256
from ucfpipe.cli import main
from ucfpipe.config import TrainConfig, fingerprint
from ucfpipe.core.files import write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_UCF101 = REPO.parent / "shared" / "ucf101"
# Sizes are tiny on purpose (32x32 frames, T=8, random weights): the suite must stay fast on 2 cores.
TINY = {"frames": 8, "size": 32, "weights": "none", "batch_size": 64, "workers": 2, "seed": 0}


def extract_tiny(dataset: dict, out: Path, **changes) -> Path:
    """`dataset` through stage one at the TINY settings (plus `changes`) into `out`; every clip must extract."""
    from ucfpipe.config import ExtractConfig
    from ucfpipe.stage_one import extract

    config = ExtractConfig(videos=str(dataset["videos"]), splits=str(dataset["splits"]), out=str(out), **{**TINY, **changes})
    summary = extract.run(config, progress=False, log=lambda *_: None)
    assert not summary["failed"], summary["failed"]
    return out


# -- stage two on a tiny cache -----------------------------------------------------------------------------------
QUIET = {"log": lambda *_: None, "verbose": 0}
TINY_TRAIN = {"units": 16, "epochs": 3, "batch_size": 8, "val_groups": 1, "learning_rate": 3e-3, "dropout": 0.2,
              "label_smoothing": 0.0, "patience": 10}


def tiny_config(cache, splits, out, **changes) -> TrainConfig:
    return TrainConfig(features=str(cache), splits=str(splits), out=str(out), **{"split": 1, **TINY_TRAIN, **changes})


def copy_run(source: Path, destination: Path) -> Path:
    """A copy of a run directory (a shared fixture's run is read-only; a test that changes one changes its copy)."""
    shutil.copytree(source, destination)
    return destination


def copy_cache(source, destination, drop=(), settings_change=None):
    """A copy of a cache without the clips in `drop` and, with `settings_change`, under other settings (so
    another fingerprint): the situations a user meets, made without running VGG16 again."""
    destination.mkdir(parents=True)
    manifest = json.loads((source / MANIFEST).read_text())
    settings = {**manifest["settings"], **(settings_change or {})}
    manifest.update(settings=settings, fingerprint=fingerprint(settings))
    for name in manifest["shards"]:
        with h5py.File(source / name) as old, h5py.File(destination / name, "w") as new:
            ids = old["video_id"].asstr()[()]
            keep = np.array([video_id not in drop for video_id in ids])
            for key in ("video_id", "label", "group", "num_frames", "fps", "frame_indices", "features"):
                new.create_dataset(key, data=old[key][()][keep])
            new.attrs.update({**old.attrs, "fingerprint": manifest["fingerprint"], "settings": json.dumps(settings)})
        # New bytes, so new checksums: the copy must verify like a cache extract wrote.
        manifest["checksums"][name] = {**manifest["checksums"][name], "sha256": file_sha256(destination / name),
                                       "bytes": (destination / name).stat().st_size, "clips": int(keep.sum())}
    write_json(destination / MANIFEST, manifest)
    return destination


def without_timings(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def weights_of(run_dir):
    import keras

    from ucfpipe.stage_two import runs

    return keras.saving.load_model(run_dir / runs.MODEL, safe_mode=True, compile=False).get_weights()


# -- damaged shards ---------------------------------------------------------------------------------------
def flip_a_feature_byte(shard: Path, row: int) -> None:
    """Flip one byte in the middle of clip `row`'s stored features (not in the file's header)."""
    with h5py.File(shard) as handle:
        chunk = handle["features"].id.get_chunk_info(row)
    with shard.open("r+b") as handle:
        handle.seek(chunk.byte_offset + chunk.size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte ^ 0x10]))


# -- the command line ---------------------------------------------------------------------------------------------
def invoke(*args, exit_code: int | None = None, **kwargs):
    """`ucfpipe ARGS` in this process (click's CliRunner), arguments as str; with `exit_code`, asserted (the
    message shows the command line and its output). kwargs go to CliRunner.invoke (input=, env=)."""
    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    if exit_code is not None:
        assert result.exit_code == exit_code, f"ucfpipe {' '.join(map(str, args))}\n{result.output}"
    return result


def tiny_flags():
    return [f for key, value in TINY.items() for f in (f"--{key.replace('_', '-')}", value)]


def assert_one_line_error(result, *fragments: str, exit_code: int = 2):
    """Exit status `exit_code`, exactly one "Error: " line, holding every fragment, and no traceback."""
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and all(f in errors[0] for f in fragments), result.output
    assert "Traceback" not in result.output


# -- a full disk -------------------------------------------------------------------------------------------------
def fill(disk: Path) -> Path:
    """Write (more of) a file until the disk is full, down to the byte; deleting it frees the space again."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(descriptor, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(descriptor)
    return filler


# -- outputs that are not regular files (real nodes: the tests run as root, as CI does) -------------------------
def make_nodes(folder: Path) -> dict[str, Path]:
    """In `folder`: a character device like /dev/null (1, 3), a FIFO, a link to a file in another folder, a link
    to a file not yet made (in an existing folder), a link into a missing folder, a folder and a block device."""
    import stat

    folder.mkdir(parents=True, exist_ok=True)
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "real.out").write_text("old\n")
    nodes = {"device": folder / "null", "fifo": folder / "fifo", "link": folder / "link.out",
             "dangling": folder / "dangling.out", "into_missing": folder / "nowhere.out", "folder": folder / "folder",
             "block": folder / "block"}
    os.mknod(nodes["device"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(nodes["fifo"])
    os.symlink(elsewhere / "real.out", nodes["link"])
    os.symlink(elsewhere / "made.out", nodes["dangling"])
    os.symlink(folder / "missing" / "x.out", nodes["into_missing"])
    nodes["folder"].mkdir()
    os.mknod(nodes["block"], stat.S_IFBLK | 0o600, os.makedev(7, 0))
    return nodes


class FifoReader:
    """Reads a FIFO on a thread (a writer blocks until a reader opens it): `with FifoReader(path) as got: ...`,
    then `got.data`. Released at the end even if nothing wrote."""

    def __init__(self, path: Path):
        import threading

        self.path, self.data = path, b""
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        with open(self.path, "rb") as handle:
            self.data = handle.read()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # no writer came: open it once so the reader ends
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            self.thread.join(timeout=5)


def run_record(classes, split: int = 1, fingerprint: str = "f", **changes) -> dict:
    """A whole run.json as `train` writes it (what runs.Run checks), for tests that fake a run without training."""
    from ucfpipe.stage_two import runs

    return {"format": runs.FORMAT, "status": "finished", "split": split, "splits_dir": "/lists", "classes": list(classes),
            "best": {"epoch": 1}, "cache": {"directory": "/features", "fingerprint": fingerprint, "settings": {},
                                            "extract_config": {}}, **changes}


# -- run directories as `report` reads them (test_setups.py, test_temporal_transformer.py) ---------------------------
EVALUATED_CLASSES = ["ApplyEyeMakeup", "Biking", "Diving", "Fencing", "Haircut", "Punch"]


def evaluated(directory: Path, split: int, top1: float, classes=EVALUATED_CLASSES, fingerprint="f0", **settings) -> Path:
    """A run directory as `train` and `eval` leave it, as far as `report` reads it (no model)."""
    from ucfpipe.stage_two import runs

    directory.mkdir(parents=True)
    k = min(5, len(classes))
    (directory / runs.METRICS).write_text(json.dumps({
        "split": split, "top1": top1, "top5": 1.0, "top5_k": k, "mean_class_accuracy": top1, "num_test_clips": 12,
        "fingerprint": fingerprint, "dataset": "ucf101", "backbone": "vgg16"}))
    (directory / runs.RUN).write_text(json.dumps(run_record(classes, split, fingerprint)))
    config = {"split": split, "seed": split, "out": str(directory), "features": "features", "splits": "lists",
              "units": 64, "epochs": 5, "memory_limit_gb": 4.0, **settings}
    (directory / runs.CONFIG).write_text(json.dumps(config))
    return directory


def reports(dirs, tmp_path) -> dict:
    """What the text report, the markdown and the page say of `dirs`."""
    text = invoke("report", *dirs)
    markdown = invoke("report", "--markdown", *dirs)
    page = tmp_path / "page.html"
    with_page = invoke("report", "--html", page, *dirs)
    for result in (text, markdown, with_page):
        assert result.exit_code == 0, result.output
    return {"text": text.stdout, "markdown": markdown.stdout, "markdown notes": markdown.stderr,
            "html": page.read_text(encoding="utf-8")}


# -- genuine pretrained weights, photos and clips (../shared/realdata) ------------------------------------------------
REALDATA = REPO.parent / "shared" / "realdata"


def realdata() -> Path:
    """../shared/realdata, or the test is skipped with one line saying so."""
    import pytest

    if not (REALDATA / "REFERENCE.json").is_file():
        pytest.skip(f"genuine weights and data not found at {REALDATA} (../shared/realdata beside the checkout)")
    return REALDATA


def genuine_rgb(path, frame_indices, size: int) -> np.ndarray:
    """The sampled frames of a clip, decoded and resized with OpenCV alone, as RGB."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    return np.stack([cv2.cvtColor(cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                     for i in frame_indices])


def opencv_frames(path) -> np.ndarray:
    """Every frame of a video as OpenCV decodes it (BGR), independently of ucfpipe's decoding."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return np.stack(frames)


def interrupt_training_after(monkeypatch, epoch: int) -> None:
    """Ctrl-C as training finishes epoch index `epoch` (after its checkpoint), through train's own keeper."""
    from ucfpipe.stage_two import train

    original = train.RunKeeper.on_epoch_end

    def interrupted(self, number, logs=None):
        original(self, number, logs)
        if number == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.RunKeeper, "on_epoch_end", interrupted)

# -- pages in a real browser (Debian's chromium, driven by Playwright; nothing is downloaded) -----------
import pytest  # noqa: E402  (appended block: the browser marker)

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium; "
                                   "make test installs it where it runs as root with apt-get)")


def browse(path: Path, shots: Path, name: str, actions=None) -> dict:
    """Open `path` in headless Chromium: console errors, page errors, dialogs and every request that is not a
    data: URL are collected (and requests are refused); `actions(page)` runs before the screenshot."""
    from playwright.sync_api import sync_playwright

    seen = {"console": [], "errors": [], "requests": [], "dialogs": []}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and seen["console"].append(m.text))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))

            def route(request_route):
                url = request_route.request.url
                if url.startswith("data:") or url == path.resolve().as_uri():
                    request_route.continue_()
                else:
                    seen["requests"].append(url)
                    request_route.abort()

            page.route("**/*", route)
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            if actions:
                seen.update(actions(page))
            page.evaluate("window.scrollTo(0, 0)")
            shot = shots / f"{name}.png"
            page.screenshot(path=str(shot), full_page=False)
            artifacts = os.environ.get("UCFPIPE_ARTIFACTS")
            if artifacts:
                Path(artifacts).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(artifacts) / shot.name)
        finally:
            browser.close()
    return seen
