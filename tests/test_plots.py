"""TensorBoard logs: train writes loss, accuracy, their validation values and the learning rate per epoch into
RUN/tensorboard/; eval adds the test metrics and the confusion matrix. Read back with TensorBoard's own event
reader. Without TensorFlow (the JAX backend) training goes on and says in one line that no logs were written."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from helpers import QUIET, REPO, fill, tiny_config
from ucfpipe.stage_two import runs
from ucfpipe.stage_two.plots import TENSORBOARD, tensorboard_log


def read_events(folder) -> dict:
    """{tag: [(step, value or image bytes)]} of the event files in `folder`, by TensorBoard's reader."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    events.Reload()
    out = {}
    for tag in events.Tags()["tensors"]:
        out[tag] = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
    return out


def test_no_tensorflow_backend_says_so_in_one_line_and_writes_nothing(tmp_path):
    lines = []
    assert tensorboard_log(tmp_path, log=lines.append, backend="jax") is None
    assert lines == ["no TensorBoard logs: the Keras backend is jax, and TensorBoard's writer needs TensorFlow"]
    assert not (tmp_path / TENSORBOARD).exists()


@pytest.mark.slow
def test_train_and_eval_write_what_tensorboard_reads(synth_cache, synth_dataset, tmp_path):
    from ucfpipe.stage_two import evaluate, train

    out = tmp_path / "run"
    train.run(tiny_config(synth_cache, synth_dataset["splits"], out, epochs=3, learning_rate=2e-3), **QUIET)
    metrics = evaluate.run(out, baseline=True, log=lambda *_: None)
    with open(out / runs.HISTORY, newline="") as handle:
        history = list(csv.DictReader(handle))

    trained = read_events(out / TENSORBOARD / "train")
    validated = read_events(out / TENSORBOARD / "validation")
    for name, events, column in (("epoch_loss", trained, "loss"), ("epoch_accuracy", trained, "accuracy"),
                                 ("epoch_loss", validated, "val_loss"), ("epoch_accuracy", validated, "val_accuracy")):
        assert [step for step, _ in events[name]] == [1, 2, 3]
        assert [float(v) for _, v in events[name]] == pytest.approx([float(r[column]) for r in history], rel=1e-5)
    assert [float(v) for _, v in trained["epoch_learning_rate"]] == pytest.approx([2e-3] * 3)

    tested = read_events(out / TENSORBOARD / "test")
    best = json.loads((out / runs.RUN).read_text())["best"]["epoch"]
    for key in ("top1", "top5", "mean_class_accuracy", "macro_f1", "order_blind_top1"):
        (step, value), = tested[f"test/{key}"]
        assert step == best and float(value) == pytest.approx(metrics[key], rel=1e-6)
    (_, image), = tested["confusion_matrix"]
    width, height, png = image  # TensorBoard's image summary: width, height, then the encoded picture
    assert int(width) > 100 and int(height) > 100 and png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_training_on_jax_goes_on_without_logs(synth_cache, synth_dataset, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "ucfpipe.cli", "train", "--features", str(synth_cache), "--splits", str(synth_dataset["splits"]),
         "--split", "1", "--out", str(out), "--epochs", "2", "--units", "8", "--val-groups", "1", "--batch-size", "8"],
        capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no TensorBoard logs: the Keras backend is jax" in done.stdout
    assert (out / runs.MODEL).is_file() and not (out / TENSORBOARD).exists()


@pytest.mark.slow
def test_a_full_disk_stops_the_logs_in_one_line_not_the_run(small_disk):
    pytest.importorskip("tensorflow")
    lines = []
    board = tensorboard_log(small_disk / "run", log=lines.append, backend="tensorflow")
    board.epoch(1, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4}, 1e-3)
    fill(small_disk)  # the disk full, down to the byte
    for epoch in range(2, 200):  # enough to outgrow any buffer
        board.epoch(epoch, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4}, 1e-3)
    board.close()
    assert len(lines) == 1 and lines[0].startswith("TensorBoard logs stopped: "), lines


def test_a_re_eval_replaces_the_last_evals_figures_and_names_top_k_by_its_k(tmp_path):
    """A 4-class run's top-5 is top-4; a re-eval without --baseline leaves no order-blind figure of the last."""
    from ucfpipe.stage_two.plots import TensorBoardLog

    first = {"top1": 0.5, "top5": 1.0, "top5_k": 4, "order_blind_top1": 0.3}
    for metrics in (first, {"top1": 0.6, "top5": 1.0, "top5_k": 4}):
        with TensorBoardLog(tmp_path) as board:
            board.evaluation(3, metrics)
    tested = read_events(tmp_path / TENSORBOARD / "test")
    assert set(tested) == {"test/top1", "test/top4"}
    assert [float(v) for _, v in tested["test/top1"]] == pytest.approx([0.6])
