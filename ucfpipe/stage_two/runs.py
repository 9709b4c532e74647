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


def read_json(path: Path, fields: dict | None = None, fix: str = "the run directory is damaged, retrain it"):
    """The JSON at `path`; with `fields` ({"key": kind}, kinds from KINDS), an object checked to hold them (see
    `check_shape`): a file of the wrong shape is one line naming it, what was expected and `fix`."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UcfpipeError(f"{path} is missing; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UcfpipeError(f"{path} is not valid JSON; {fix}") from None
    if fields is not None:
        check_shape(path, value, fields, fix)
    return value


# What a run file holds, as JSON kinds: bool is no number here (json's true is not a top-1 of 1.0).
KINDS = {"an object": dict, "a list": list, "text": str, "an integer": int, "a number": (int, float)}


def check_shape(path: Path, value, fields: dict, fix: str) -> None:
    """One line when `value` is not an object holding `fields`: "key?" may be absent, "parent.key" is checked
    when its parent is there."""
    if not isinstance(value, dict):
        raise UcfpipeError(f"{path} holds {_kind_of(value)} where a JSON object was expected; {fix}")
    for name, kind in fields.items():
        optional = name.endswith("?")
        *parents, key = name.rstrip("?").split(".")
        holder = value
        for parent in parents:
            holder = holder.get(parent) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue  # an optional parent that is absent (a required one was refused before its children)
        if key not in holder:
            if optional:
                continue
            raise UcfpipeError(f"{path} has no {name!r} ({kind} was expected); {fix}")
        found = holder[key]
        if isinstance(found, bool) or not isinstance(found, KINDS[kind]):
            raise UcfpipeError(f"{path}: {name.rstrip('?')!r} is {_kind_of(found)} ({json.dumps(found)[:40]}) where "
                               f"{kind} was expected; {fix}")


def _kind_of(value) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    for kind, types in KINDS.items():
        if isinstance(value, types):
            return kind
    return type(value).__name__


RUN_FIELDS = {"format": "text", "status": "text", "split": "an integer", "splits_dir": "text", "classes": "a list",
              "cache": "an object", "cache.directory": "text", "cache.fingerprint": "text", "cache.settings": "an object",
              "cache.extract_config": "an object", "best?": "an object", "best.epoch": "an integer"}
CLIPS_FIELDS = {"train": "a list", "val": "a list", "test": "a list"}
STATE_FIELDS = {"epoch": "an integer", "checkpoint": "text"}
# What `report` and the page read of an evaluation; older evals lack the optional ones.
METRICS_FIELDS = {"top1": "a number", "top5": "a number", "mean_class_accuracy": "a number", "split": "an integer",
                  "num_test_clips": "an integer", "num_not_evaluated?": "an integer", "order_blind_top1?": "a number",
                  "macro_f1?": "a number", "tta?": "an object", "tta.top1": "a number", "dataset?": "text",
                  "backbone?": "text", "fingerprint?": "text"}


def read_metrics(directory: str | Path) -> dict:
    """metrics.json of an evaluated run or ensemble, checked to hold the figures reports read."""
    path = Path(directory) / METRICS
    if not path.is_file():
        raise UcfpipeError(f"{directory} has no {METRICS}; run `ucfpipe eval --run {directory}` first")
    return read_json(path, METRICS_FIELDS, f"rerun `ucfpipe eval --run {directory}` to rewrite it")


class Run:
    """A finished (or interrupted) training run: `Run(dir)`, its run.json and config.json read and checked once.
    Paths it recorded are absolute (train resolves them), so they mean the same from any folder."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not (self.directory / RUN).is_file():
            raise UcfpipeError(
                f"{self.directory} is not a ucfpipe run directory (no {RUN}); pass the --out directory of `ucfpipe train`"
            )
        path = self.directory / RUN
        self.record = read_json(path, {})
        if self.record.get("format") != FORMAT:
            raise UcfpipeError(f"{path} is not a {FORMAT} record (format {self.record.get('format')!r})")
        check_shape(path, self.record, RUN_FIELDS, "the run directory is damaged, retrain it")
        if self.finished:
            check_shape(path, self.record, {"best": "an object"}, "the run directory is damaged, retrain it")
        known = {f.name for f in fields(TrainConfig)}
        self.settings: dict = read_json(self.directory / CONFIG, {})  # config.json as recorded, for reports
        values = {**PRE_AUGMENTATION, **self.settings}
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
    def split(self) -> int:
        return self.record["split"]

    @property
    def best_epoch(self) -> int | None:
        return self.record.get("best", {}).get("epoch")

    @property
    def fingerprint(self) -> str:
        return self.record["cache"]["fingerprint"]

    @property
    def extract_config(self) -> dict:
        """The extract settings of the cache the run was trained on (what serving rebuilds its stage one from)."""
        return self.record["cache"]["extract_config"]

    @property
    def cache_settings(self) -> dict:
        """The feature settings of the run's cache (what its fingerprint hashes)."""
        return self.record["cache"]["settings"]

    @property
    def cache_directory(self) -> str:
        """Where the run's feature cache was when it trained (`features_dir` checks that it is still there)."""
        return self.record["cache"]["directory"]

    @property
    def typical_clip_seconds(self) -> float | None:
        """The median clip duration of the run's cache as train records it; None for runs from before that."""
        seconds = self.record["cache"].get("typical_clip_seconds")
        return float(seconds) if seconds else None

    @property
    def clip_ids(self) -> dict[str, list[str]]:
        """clips.json: the train / val / test video ids the run used."""
        return read_json(self.path(CLIPS), CLIPS_FIELDS)

    @property
    def metrics(self) -> dict:
        return read_metrics(self.directory)

    # -- what stage two's modules ask of a run (report, setups, the page, resume) ------------------------------
    @property
    def dataset(self) -> str | None:
        """The dataset the run was trained on; runs recorded before run.json named it take their cache's word
        (None when neither says: a cache made before datasets existed)."""
        return self.record.get("dataset", self.extract_config.get("dataset"))

    @property
    def backbone(self) -> str | None:
        """The backbone of the run's cache (None for caches made before backbones were selectable: VGG16's)."""
        return self.extract_config.get("backbone")

    @property
    def data(self) -> dict:
        """run.json's "data": hold-out rule, validation groups, clip counts, missing clips, views."""
        return self.record.get("data", {})

    @property
    def versions(self) -> dict:
        """The library versions the run was trained with."""
        return self.record.get("versions", {})

    def relocated(self, features: str | Path, splits: str | Path) -> dict:
        """run.json's record with the feature cache and split files where they are now (a resumed run's)."""
        record = json.loads(json.dumps(self.record))
        record["cache"]["directory"] = str(Path(features).resolve())
        record["splits_dir"] = str(Path(splits).resolve())
        return record

    def features_dir(self, given: str | Path | None = None) -> Path:
        """`given` (--features) when passed, else the feature cache the run recorded, which must still be there."""
        return self._recorded(given, self.cache_directory, "feature cache", "--features")

    def splits_dir(self, given: str | Path | None = None) -> Path:
        """`given` (--splits) when passed, else the split files' folder the run recorded, which must still be there."""
        return self._recorded(given, self.record["splits_dir"], "splits folder", "--splits")

    def _recorded(self, given, recorded: str, what: str, flag: str) -> Path:
        if given is not None:
            return Path(given)
        # Older runs' config.json held paths as typed; run.json always held them absolute.
        if not Path(recorded).exists():
            raise UcfpipeError(f"the {what} {recorded} recorded by run {self.directory} is gone; if it moved, pass "
                               f"{flag} with where it is now")
        return Path(recorded)

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
