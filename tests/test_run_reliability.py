"""Run-side faults, each on a real process or a real file system: Ctrl-C at any moment, two writers on one run,
a full disk under train / eval / finetune, extraction batches larger than the work, and the smaller traps
(bench's clip counts, predict on a folder, a moved weights file, eval --tta without views, global RNG state)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import QUIET, assert_one_line_error, extract_tiny, fill, invoke, tiny_config
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import FinetuneConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import DiskFull
from ucfpipe.stage_one import featurising, finetune
from ucfpipe.stage_two import evaluate, runs, train

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
CLI = [sys.executable, "-m", "ucfpipe.cli"]


def said(stderr: str) -> list[str]:
    """What ucfpipe itself printed on stderr: TensorFlow's C++ start-up lines (absl, oneDNN) left out."""
    return [line for line in stderr.splitlines() if line.strip() and "absl::InitializeLog" not in line and "port.cc" not in line]


def train_args(cache, splits, out, *more):
    return ["train", "--features", str(cache), "--splits", str(splits), "--out", str(out), "--units", "16",
            "--batch-size", "8", "--val-groups", "1", "--patience", "1000", *more]


@pytest.fixture(scope="module")
def finished_run(tiny_run):
    return tiny_run


def long_args(stage: str, synth_dataset, synth_cache, out) -> list[str]:
    """An extract or train far longer than the latest signal the tests send (64x64 frames, 16 per clip, 8 per
    batch; 1000 epochs)."""
    if stage == "extract":
        return ["extract", "--videos", str(synth_dataset["videos"]), "--splits", str(synth_dataset["splits"]),
                "--out", str(out), "--frames", "16", "--size", "64", "--weights", "none", "--batch-size", "8",
                "--no-progress"]
    return train_args(synth_cache, synth_dataset["splits"], out, "--epochs", "1000")


# A signal this many seconds after the start lands while the interpreter starts (TensorFlow imports for about 6 s
# here): a fresh one, as a user's. Later ones are sent to a command started warm (tests/warm_process.py), so that
# they land while it works: seconds into its training or extraction.
DURING_START = 2.0


def start_long(stage, delay, synth_dataset, synth_cache, out, warm):
    args = long_args(stage, synth_dataset, synth_cache, out)
    if delay < DURING_START:
        return subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return warm.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# -- Ctrl-C at any moment --------------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0.5, 1.5, 3.0, 5.0])
@pytest.mark.parametrize("stage", ["extract", "train"])
def test_ctrl_c_at_any_moment_ends_with_one_line_and_exit_130(stage, delay, synth_dataset, synth_cache, tmp_path, warm):
    out = tmp_path / "out"
    process = start_long(stage, delay, synth_dataset, synth_cache, out, warm)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Aborted" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    lines = said(stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), lines
    if stage == "train":  # either a run `--resume` continues, or nothing half-made that the same command refuses
        assert (out / runs.RUN).is_file() if "--resume" in lines[0] else not out.exists()


@pytest.mark.parametrize("delay", [1.5, 5.0])
@pytest.mark.parametrize("stage", ["extract", "train"])
def test_sigterm_takes_the_ctrl_c_way_and_exits_143(stage, delay, synth_dataset, synth_cache, tmp_path, warm):
    """What `timeout`, `docker stop` and systemd send: the same safe points, line and leftovers as Ctrl-C, and
    128 + SIGTERM as the status (by default Python would die at once, mid-write, with no line at all)."""
    out = tmp_path / "out"
    process = start_long(stage, delay, synth_dataset, synth_cache, out, warm)
    time.sleep(delay)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]  # -15 would be a death by the signal, no handler run
    assert "Traceback" not in stderr and "Aborted" not in stderr and "Exception ignored" not in stderr, stderr[-3000:]
    lines = said(stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: interrupted"), lines
    assert not leftovers(tmp_path)
    if stage == "train":
        assert (out / runs.RUN).is_file() if "--resume" in lines[0] else not out.exists()
    elif "safely in" in lines[0]:  # the clips it kept are a cache the same command resumes ("0 clips are safely
        assert (out / "manifest.json").is_file() or any(out.glob("shard-*.h5"))  # in" one that holds none was a lie)


# -- one writer per run directory --------------------------------------------------------------------------------
def wait_for(condition, process, timeout=120.0):
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_a_second_writer_on_a_run_is_refused_naming_the_holder(synth_dataset, synth_cache, tmp_path, warm):
    out = tmp_path / "run"
    first = warm.start(train_args(synth_cache, synth_dataset["splits"], out, "--epochs", "1000"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (out / runs.CHECKPOINTS / runs.STATE).is_file(), first)
        # The second writers run in this process: the lock is the first process's, which is what matters here.
        for command in (["train", "--resume", "--out", out], ["eval", "--run", out]):
            assert_one_line_error(invoke(*command), f"is in use by pid {first.pid} (ucfpipe train --features")
        assert first.poll() is None  # the holder goes on untouched
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    done = runs.read_json(out / runs.CHECKPOINTS / runs.STATE)["epoch"]
    # The lock died with its holder: the resume it named now runs (to the epoch reached, so at once).
    invoke("train", "--resume", "--out", out, "--epochs", done, exit_code=0)
    assert runs.Run(out).finished


def test_two_finetunes_writing_one_file_are_refused(synth_dataset, tmp_path):
    out = tmp_path / "vgg.weights.h5"
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out),
                            weights="none", size=32, frames_per_clip=1, epochs=1, batch_size=16, val_groups=1, workers=1)
    with runs.locked(out.with_name(f".{out.name}.lock"), f"output {out}"):  # as a running finetune holds it
        with pytest.raises(UcfpipeError, match=f"output {out} is in use by pid {os.getpid()}"):
            finetune.run(config, **QUIET)
    assert not out.exists()






def leftovers(directory: Path) -> list[str]:
    return [str(p) for p in directory.rglob("*") if ".tmp" in p.name]


def test_full_disk_mid_training_is_one_line_and_resume_completes(synth_dataset, synth_cache, small_disk, warm):
    out = small_disk / "run"
    process = warm.start(train_args(synth_cache, synth_dataset["splits"], out, "--epochs", "1000"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / runs.CHECKPOINTS / runs.STATE
    wait_for(lambda: state.is_file() and runs.read_json(state)["epoch"] >= 2, process)
    deadline = time.time() + 120
    while process.poll() is None and time.time() < deadline:  # kept full: training deletes old checkpoints
        filler = fill(small_disk)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 2, stderr[-3000:]
    lines = said(stderr)
    assert len(lines) == 1 and "the disk is full" in lines[0] and str(out) in lines[0], lines
    assert f"ucfpipe train --resume --out {out}" in lines[0]
    assert not leftovers(out), leftovers(out)
    reached = runs.read_json(state)["epoch"]  # the last whole checkpoint
    filler.unlink()
    invoke("train", "--resume", "--out", out, "--epochs", reached + 1, exit_code=0)  # here: the resume is what is tested
    run = runs.Run(out)
    assert run.finished and run.record["epochs_run"] == reached + 1
    assert not leftovers(out)


def test_full_disk_under_eval_keeps_the_previous_outputs(synth_dataset, finished_run, small_disk):
    run_dir = small_disk / "run"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns(runs.METRICS, runs.PER_CLASS, runs.CONFUSION, runs.PREDICTIONS))
    evaluate.run(run_dir, log=lambda *_: None)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != runs.LOCK and p.is_file()}  # not tensorboard/
    filler = fill(small_disk)
    with pytest.raises(DiskFull, match=f"^{run_dir}/.*: the disk is full"):
        evaluate.run(run_dir, log=lambda *_: None)
    assert not leftovers(run_dir)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != runs.LOCK and p.is_file()} == before  # nothing lost or half-written
    filler.unlink()
    metrics = evaluate.run(run_dir, log=lambda *_: None)
    assert json.loads((run_dir / runs.METRICS).read_text())["top1"] == metrics["top1"]


def test_full_disk_under_finetune_says_which_file_and_leaves_no_temp(synth_dataset, disk_of):
    small_disk = disk_of("96m")  # VGG16's weights take 58 MB
    out = small_disk / "vgg.weights.h5"
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out),
                            weights="none", size=32, frames_per_clip=1, epochs=1, batch_size=16, val_groups=1, workers=1)
    filler = fill(small_disk)
    with pytest.raises(DiskFull, match=f"^{out}: the disk is full"):
        finetune.run(config, **QUIET)
    assert not out.exists() and not leftovers(small_disk)
    filler.unlink()
    finetune.run(config, **QUIET)
    assert out.is_file() and not leftovers(small_disk)


def test_full_disk_is_one_line_from_the_cli(finished_run, small_disk):
    run_dir = small_disk / "run"
    shutil.copytree(finished_run, run_dir)
    fill(small_disk)
    result = invoke("eval", "--run", str(run_dir))
    assert result.exit_code == 2
    assert "the disk is full" in result.output and "Traceback" not in result.output


# -- extraction batches ----------------------------------------------------------------------------------------
class Recording:
    """The real extractor, noting the batch shapes it is called with."""

    def __init__(self, model):
        self.model, self.shapes = model, []

    def predict_on_batch(self, batch):
        self.shapes.append(batch.shape[0])
        return self.model.predict_on_batch(batch)


@pytest.mark.parametrize("batch_size, expected", [(100000, [176]), (128, [128, 64]), (64, [64, 64, 64]), (50, [50, 50, 50, 32])])
def test_batches_never_exceed_the_work_and_pad_the_last_to_a_power_of_two(batch_size, expected):
    from ucfpipe.models.extractor import build_extractor

    model = Recording(build_extractor("none", size=32))
    frames = np.random.default_rng(0).integers(0, 256, (22, 8, 32, 32, 3), dtype=np.uint8)  # 176 frames
    batcher = featurising.Batcher(model, batch_size, (32, 32, 3), total_frames=176)
    done = []
    for clip in frames:
        done += batcher.add(featurising.Pending(None, clip.copy(), np.arange(8), 8, 25.0))
    done += batcher.run()
    assert model.shapes == expected
    assert len(done) == 22
    reference = np.asarray(model.model.predict_on_batch(frames.reshape(176, 32, 32, 3))).reshape(22, 8, -1)
    np.testing.assert_allclose(np.stack([p.outputs for p in done]), reference, rtol=1e-4, atol=1e-4)


def test_a_huge_batch_size_extracts_what_a_small_one_does(synth_dataset, synth_cache, tmp_path):
    out = extract_tiny(synth_dataset, tmp_path / "features", batch_size=100000)
    big, reference = FeatureStore(out), FeatureStore(synth_cache)
    assert big.video_ids == reference.video_ids
    np.testing.assert_allclose(big.features(big.video_ids).astype(np.float32),
                               reference.features(reference.video_ids).astype(np.float32), rtol=2e-3, atol=1e-4)


def test_a_backend_out_of_memory_is_one_line_suggesting_a_smaller_batch():
    import tensorflow as tf

    class OutOfMemory:
        def predict_on_batch(self, batch):  # what TensorFlow raises when a batch does not fit
            raise tf.errors.ResourceExhaustedError(None, None, f"OOM when allocating tensor with shape[{len(batch)},64,112,112]")

    batcher = featurising.Batcher(OutOfMemory(), 2048, (32, 32, 3), total_frames=4096)
    batcher.add(featurising.Pending(None, np.zeros((8, 32, 32, 3), np.uint8), np.arange(8), 8, 25.0))
    with pytest.raises(UcfpipeError, match=r"out of memory .* batches of 2048 frames.*smaller --batch-size \(e\.g\. 512\)"):
        batcher.run()


# -- smaller traps -------------------------------------------------------------------------------------------------
def test_bench_refuses_a_clip_count_it_cannot_generate_before_any_work(tmp_path):
    started = time.time()
    result = invoke("bench", "--clips", "7,16")
    assert result.exit_code == 2 and "--clips must be multiples of 8" in result.output and "Traceback" not in result.output
    assert time.time() - started < 5


def test_predict_on_a_folder_classifies_every_video_under_it(synth_dataset, finished_run, tmp_path):
    folder = tmp_path / "videos"
    shutil.copytree(Path(synth_dataset["videos"]) / "GrowingDisk", folder / "nested")
    (folder / "notes.txt").write_text("not a video")
    expected = sorted(str(p) for p in (folder / "nested").glob("*.avi"))
    result = invoke("predict", str(folder), "--run", str(finished_run), "--json", "--top", "1")
    assert result.exit_code == 0, result.output
    assert [p["video"] for p in json.loads(result.stdout)] == expected
    (tmp_path / "empty").mkdir()
    result = invoke("predict", str(tmp_path / "empty"), "--run", str(finished_run))
    assert result.exit_code == 2 and "is a directory with no video files under it" in result.output


def test_a_run_on_a_relative_weights_file_predicts_from_anywhere(synth_dataset, tmp_path, monkeypatch):
    from ucfpipe.models.extractor import load_application

    monkeypatch.chdir(tmp_path)
    load_application("vgg16", "none", 32, 7).save_weights("vgg.weights.h5")  # a seeded random VGG16, relative to the cwd
    cache = extract_tiny(synth_dataset, Path("features"), weights="vgg.weights.h5")
    train.run(tiny_config(cache, synth_dataset["splits"], tmp_path / "run", epochs=1), **QUIET)
    video = str(Path(synth_dataset["videos"]) / "GrowingDisk" / "v_GrowingDisk_g01_c01.avi")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    predict = ["predict", video, "--run", str(tmp_path / "run"), "--json"]
    first = invoke(*predict)
    assert first.exit_code == 0, first.output  # the manifest recorded the absolute path
    (tmp_path / "vgg.weights.h5").rename(tmp_path / "vgg-moved.weights.h5")
    lost = invoke(*predict)
    assert lost.exit_code == 2 and "pass --weights with where it is now" in lost.output, lost.output
    moved = invoke(*predict + ["--weights", str(tmp_path / "vgg-moved.weights.h5")])
    assert moved.exit_code == 0 and json.loads(moved.stdout) == json.loads(first.stdout)
    (tmp_path / "vgg-moved.weights.h5").rename(tmp_path / "run" / "vgg.weights.h5")  # copied along with the run
    beside = invoke(*predict)
    assert beside.exit_code == 0 and json.loads(beside.stdout) == json.loads(first.stdout)


def test_eval_tta_on_a_cache_without_views_warns_it_equals_the_plain_evaluation(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    said_lines = []
    metrics = evaluate.run(run_dir, tta=True, log=said_lines.append)
    assert any(line.startswith("warning:") and "--tta equals the plain evaluation" in line for line in said_lines)
    assert metrics["tta"]["top1"] == metrics["top1"]


def test_building_an_extractor_or_predictor_leaves_global_random_state_alone(finished_run):
    from ucfpipe.models.extractor import build_extractor
    from ucfpipe.serving.predictor import Predictor

    for build in (lambda: build_extractor("none", size=32, seed=3), lambda: Predictor(finished_run)):
        random.seed(123)
        np.random.seed(123)
        expected = (random.random(), np.random.random())
        random.seed(123)
        np.random.seed(123)
        build()
        assert (random.random(), np.random.random()) == expected
