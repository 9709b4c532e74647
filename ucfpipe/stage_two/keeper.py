"""The epoch keeper: the Keras callback that keeps a training run's best model, early stopping, history and the
resume checkpoint together, with safe points between batches (`models.callbacks.SafePoints`)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from ucfpipe.core import files
from ucfpipe.models.callbacks import SafePoints
from ucfpipe.stage_two import runs

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]


def random_states(model) -> list:
    """The states of the model's random generators (dropout masks). A saved .keras model leaves them out, so
    the checkpoint keeps them: a resumed run then draws the masks an uninterrupted one would have drawn."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


class RunKeeper(SafePoints):
    """Best model, early stopping, history and the resume checkpoint in one place, so that all of it is
    saved together and a resumed run continues with the same best value, patience count and history."""

    def __init__(self, directory: Path, monitor: str, patience: int, state: dict | None = None, log=print, board=None):
        super().__init__()
        self.directory = directory
        self.board = board  # plots.TensorBoardLog, or None (no TensorFlow)
        self.monitor = monitor
        self.patience = patience
        self.log = log
        self.state = state or {"epoch": 0, "best": None, "best_epoch": None, "wait": 0, "history": [], "stopped_early": False}
        self.diverged_at: int | None = None
        self._started = 0.0

    def _better(self, value: float) -> bool:
        best = self.state["best"]
        if best is None:
            return True
        return value > best if self.monitor.endswith("accuracy") else value < best

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)  # a safe point
        self._started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        number = epoch + 1
        row = {"epoch": number, **{k: float(logs[k]) for k in HISTORY_COLUMNS[1:-1] if k in logs}}
        row["seconds"] = round(time.monotonic() - self._started, 3)
        state = self.state
        state["history"].append(row)
        if not math.isfinite(row.get("loss", math.nan)):
            self.diverged_at = number
            self.model.stop_training = True
            return
        value = float(logs[self.monitor])
        if self._better(value):
            state.update(best=value, best_epoch=number, wait=0)
            runs.save_model_atomic(self.model, self.directory / runs.MODEL)
            self.log(f"  epoch {number}: best {self.monitor} so far, {value:.4f} -> {runs.MODEL}")
        else:
            state["wait"] += 1
        if state["wait"] >= self.patience:
            state["stopped_early"] = True
            self.model.stop_training = True
        self._checkpoint(number)
        write_history(self.directory, state["history"])
        if self.board is not None:  # after the checkpoint: a killed run logs at most the epoch it resumes again
            learning_rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            self.board.epoch(number, row, learning_rate)

    def _checkpoint(self, number: int) -> None:
        """The model goes to a new file first and state.json names it last, so a kill at any moment leaves
        a state that points at a whole model of the epoch it describes."""
        folder = self.directory / runs.CHECKPOINTS
        folder.mkdir(exist_ok=True)
        name = f"last-{number:04d}.keras"
        runs.save_model_atomic(self.model, folder / name)
        states = [keras.ops.convert_to_numpy(v).tolist() for v in random_states(self.model)]
        self.state.update(epoch=number, checkpoint=name, random_states=states)
        files.write_json(folder / runs.STATE, self.state)
        for old in folder.glob("last-*.keras"):
            if old.name != name:
                old.unlink()


def write_history(directory: Path, history: list[dict]) -> None:
    rows = [[row.get(column, "") for column in HISTORY_COLUMNS] for row in history]
    files.write_csv(directory / runs.HISTORY, HISTORY_COLUMNS, rows)
