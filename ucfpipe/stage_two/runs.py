"""The run directory: what `train` leaves behind and `eval`, `predict` and `report` read.

    model.keras     the best model (by validation), normalisation statistics inside; no pickles anywhere
    config.json     the full train configuration, seed included
    run.json        the feature cache's fingerprint, settings and extract config (so predict can rebuild stage
                    one), classes, split, validation groups, clip counts, library versions, the outcome
    clips.json      the train / validation / test video ids used
    history.csv     one row per epoch; curves.png plots it
    checkpoint/     the last epoch's model and optimizer plus state.json, for `train --resume`; removed at the end
    metrics.json, per_class.csv, confusion.png, predictions.csv   written by `ucfpipe eval`
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from ucfpipe.cache.format import describe_difference
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import replacing
from ucfpipe.core.locks import locked

FORMAT = "ucfpipe-run/1"
MODEL = "model.keras"
CONFIG = "config.json"
RUN = "run.json"
CLIPS = "clips.json"
HISTORY = "history.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoint"
STATE = "state.json"
METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.png"
PREDICTIONS = "predictions.csv"
LOCK = "run.lock"
# Runs recorded before training augmentation existed trained without it: their config.json lacks these keys,
# and a resumed one must go on as it started.
PRE_AUGMENTATION = {"train_views": "center", "time_jitter": 0.0, "step_drop": 0.0}


def save_model_atomic(model, path: Path) -> None:
    with replacing(path, keep_suffix=True) as tmp:  # Keras picks the format from the suffix
        model.save(tmp)


def load_model(path: Path, compile: bool = False):
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except Exception as err:  # a damaged or foreign file surfaces as several exception types
        raise UcfpipeError(f"cannot load the model {path} ({type(err).__name__}: {str(err)[:160]}); retrain the run") from None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UcfpipeError(f"{path} is not valid JSON; the run directory is damaged, retrain it") from None


class Run:
    """A finished (or interrupted) training run: `Run(dir)`."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / RUN).is_file():
            raise UcfpipeError(
                f"{self.directory} is not a ucfpipe run directory (no {RUN}); pass the --out directory of `ucfpipe train`"
            )
        self.record = read_json(self.directory / RUN)
        if self.record.get("format") != FORMAT:
            raise UcfpipeError(f"{self.directory / RUN} is not a {FORMAT} record (format {self.record.get('format')!r})")
        known = {f.name for f in fields(TrainConfig)}
        values = {**PRE_AUGMENTATION, **read_json(self.directory / CONFIG)}
        self.config = TrainConfig(**{k: v for k, v in values.items() if k in known})

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def finished(self) -> bool:
        return self.record.get("status") == "finished"

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.record["classes"])

    @property
    def fingerprint(self) -> str:
        return self.record["cache"]["fingerprint"]

    def require_finished(self) -> None:
        if not self.finished:
            raise UcfpipeError(
                f"{self.directory} is an unfinished training run; finish it with "
                f"`ucfpipe train --resume --out {self.directory}` first"
            )

    def check_cache(self, store: FeatureStore) -> None:
        """Features of another fingerprint are other numbers: the model would silently see wrong inputs."""
        if store.fingerprint != self.fingerprint:
            differences = describe_difference(store.settings, self.record["cache"]["settings"], "here,", "in training")
            raise UcfpipeError(
                f"feature cache {store.directory} (fingerprint {store.fingerprint}) is not the one {self.directory} was "
                f"trained on ({self.fingerprint}; {differences}); pass --features with the cache `ucfpipe train` used "
                f"({self.record['cache']['directory']})"
            )

    def load_model(self):
        path = self.path(MODEL)
        if not path.is_file():
            raise UcfpipeError(f"{self.directory} has no {MODEL}; the run ended before its first epoch, retrain it")
        return load_model(path)

    def lock(self):
        return lock_run(self.directory)


def lock_run(directory: Path):
    """The lock of a run directory (see `locked`); the directory must exist."""
    return locked(Path(directory) / LOCK, f"run directory {directory}")
