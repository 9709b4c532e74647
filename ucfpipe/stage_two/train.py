"""Stage two, training: cached features of one official split's training list -> an LSTM classifier.

Validation comes from the training list only and holds out whole groups (clips of one group share actors
and scene, so a random clip split would leak); the test list is recorded but never read here. The best
epoch by validation is kept, and an epoch checkpoint lets `--resume` continue an interrupted run.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig, recorded, to_dict
from ucfpipe.core import files, interrupts
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.core.rng import seed_everything
from ucfpipe.models.classifier import build_classifier, compile_classifier, feature_statistics
from ucfpipe.models.distribute import Placement, placement
from ucfpipe.stage_two import runs
from ucfpipe.stage_two.batches import ClipBatches, feature_bytes, iterate_features, load_source

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"]
# What `--resume` may change: where the inputs are, how long to go on, and on how many devices (data
# parallelism computes what one device does); anything else would be another run.
RESUMABLE_OVERRIDES = ("features", "splits", "epochs", "memory_limit_gb", "distribute")


class TrainingInterrupted(Interrupted):
    """Stopped after a finished epoch: `--resume` continues from it."""


# -- which clips ---------------------------------------------------------------------------------------------
@dataclass
class ClipPlan:
    train: list[datasets.Clip]
    val: list[datasets.Clip]
    test: list[datasets.Clip]  # recorded for `ucfpipe eval`; training never reads its features
    val_groups: list[int]
    train_groups: list[int]
    missing_train: list[str]
    missing_test: list[str]
    holdout: str = "groups"  # the split's rule (datasets.HOLDOUTS): whole groups, whole sources, or stratified clips
    val_sources: list[str] = ()  # the held-out groups by name ("g08", a source film); empty when stratified


def check_labels(split: datasets.Split, store: FeatureStore) -> None:
    """The cache's labels must be this classInd's: a cache made from other split files numbers classes otherwise."""
    if len(store) and int(store.labels(store.video_ids).max()) >= len(split.classes):
        raise UcfpipeError(
            f"feature cache {store.directory} has labels up to {int(store.labels(store.video_ids).max())} but classInd.txt "
            f"lists {len(split.classes)} classes; pass the --splits folder the cache was extracted with "
            f"({store.config.get('splits')})"
        )
    clips = [c for c in split.train + split.test if c.video_id in store]
    if clips:
        stored = store.labels([c.video_id for c in clips])
        wrong = [(c, int(s)) for c, s in zip(clips, stored) if s != c.label]
        if wrong:
            clip, found = wrong[0]
            raise UcfpipeError(
                f"{len(wrong)} clips have other labels in the cache than in classInd.txt (e.g. {clip.video_id}: "
                f"{found} in the cache, {clip.label} in the lists); pass the --splits folder the cache was extracted "
                f"with ({store.config.get('splits')}) or re-extract"
            )


def plan_clips(split: datasets.Split, store: FeatureStore, config: TrainConfig) -> ClipPlan:
    """Train/validation/test clips of the split that the cache holds; refuses missing clips unless allowed."""
    missing_train = [c.video_id for c in split.train if c.video_id not in store]
    missing_test = [c.video_id for c in split.test if c.video_id not in store]
    if (missing_train or missing_test) and not config.allow_missing:
        example = (missing_test or missing_train)[0]
        raise UcfpipeError(
            f"split {split.number}: {len(missing_test)} of {len(split.test)} test clips and {len(missing_train)} of "
            f"{len(split.train)} train clips are not in the feature cache {store.directory} (e.g. {example}); "
            "extract them (rerun `ucfpipe extract`), or pass --allow-missing to use the clips present "
            "(a smaller test set gives a different number; metrics.json records it)"
        )
    train = [c for c in split.train if c.video_id in store]
    test = [c for c in split.test if c.video_id in store]
    groups = sorted({c.group for c in train})
    if not groups:
        raise UcfpipeError(f"none of the {len(split.train)} training clips of split {split.number} is in {store.directory}")
    # The dataset's own rule (UCF-101: gGG groups; HMDB51: source films; otherwise stratified by class); every
    # rule holds out whole groups, so no group or source is on both sides.
    kept, val, val_groups = datasets.hold_out(split, train, config.val_groups, config.seed)
    held = set(val_groups)
    return ClipPlan(
        train=kept,
        val=val,
        test=test,
        val_groups=val_groups,
        train_groups=[g for g in groups if g not in held],
        missing_train=missing_train,
        missing_test=missing_test,
        holdout=split.holdout,
        val_sources=sorted({c.source for c in val} - {""}),
    )


# -- reproducibility ----------------------------------------------------------------------------------------
def random_states(model) -> list:
    """The states of the model's random generators (dropout masks). A saved .keras model leaves them out, so
    the checkpoint keeps them: a resumed run then draws the masks an uninterrupted one would have drawn."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


# -- the epoch keeper ---------------------------------------------------------------------------------------
class RunKeeper(keras.callbacks.Callback):
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
        interrupts.check()
        self._started = time.monotonic()

    # Safe points: a Ctrl-C whose KeyboardInterrupt a gc callback swallowed still stops the run here.
    def on_train_batch_end(self, batch, logs=None):
        interrupts.check()

    def on_test_batch_end(self, batch, logs=None):
        interrupts.check()

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


# -- the run directory --------------------------------------------------------------------------------------
def _never_trained(out: Path) -> bool:
    """A run directory whose run finished no epoch (stopped by a damaged cache, a kill -9, a crash before
    its first checkpoint): it holds no model and nothing to resume, so it is not a run."""
    return ((out / runs.RUN).is_file() and not (out / runs.MODEL).exists()
            and not (out / runs.CHECKPOINTS / runs.STATE).exists())


def _check_new_run_dir(out: Path, clear: bool = False) -> None:
    """Refuse an --out that holds anything but a run that never trained; with `clear` (under the run's lock),
    remove such a run's files so the same command starts it over."""
    if (out / runs.RUN).exists():
        if not _never_trained(out):
            raise UcfpipeError(
                f"{out} already holds a training run; continue an unfinished one with `ucfpipe train --resume --out {out}`, "
                "or choose another --out"
            )
        if not clear:
            return
        _remove_unstarted(out, created=False)
    if out.exists() and (not out.is_dir() or any(p.name != runs.LOCK for p in out.iterdir())):
        raise UcfpipeError(f"--out {out} exists and is not an empty directory; choose a new run directory")


def resume_config(run_dir: str | Path, overrides: dict | None = None) -> TrainConfig:
    """The interrupted run's own configuration, with only RESUMABLE_OVERRIDES allowed to change."""
    run = runs.Run(run_dir)
    if run.finished:
        raise UcfpipeError(f"{run_dir} is a finished run (best epoch {run.best_epoch}); nothing to resume")
    values = to_dict(run.config)
    overrides = dict(overrides or {})
    # Where the inputs are: as passed now, else as run.json recorded them (absolute; an old config.json may
    # hold them relative to a folder this command need not run in).
    values["features"] = str(run.features_dir(overrides.pop("features", None)))
    values["splits"] = str(run.splits_dir(overrides.pop("splits", None)))
    for name, value in overrides.items():
        if value is None or value == values.get(name) or name == "out":
            continue
        if name not in RESUMABLE_OVERRIDES:
            raise UcfpipeError(
                f"--resume continues {run_dir} with its recorded settings (--{name.replace('_', '-')} {values.get(name)}); "
                f"drop --{name.replace('_', '-')}, or start a new run with another --out"
            )
        values[name] = value
    values["out"] = str(run_dir)
    return TrainConfig(**values).validate()


def _record(config: TrainConfig, store: FeatureStore, split: datasets.Split, plan: ClipPlan, in_memory: bool) -> dict:
    from ucfpipe.core.provenance import versions

    return {
        "format": runs.FORMAT,
        "status": "running",
        "split": split.number,
        "dataset": split.dataset,
        "splits_dir": str(Path(config.splits).resolve()),
        "classes": list(split.classes),
        "cache": {
            "directory": str(Path(config.features).resolve()),
            "fingerprint": store.fingerprint,
            "settings": store.settings,
            "extract_config": store.config,
            "num_steps": store.num_steps,
            "feature_shape": list(store.feature_shape),
            "typical_clip_seconds": store.typical_clip_seconds(),  # predict --window's default span
        },
        "data": {
            "holdout": plan.holdout,
            "val_sources": plan.val_sources,
            "val_groups": plan.val_groups,
            "train_groups": plan.train_groups,
            "num_train": len(plan.train),
            "num_val": len(plan.val),
            "num_test": len(plan.test),
            "allow_missing": config.allow_missing,
            "missing_train": plan.missing_train,
            "missing_test": plan.missing_test,
            "in_memory": in_memory,
            "train_views": [store.views[v] for v in training_views(store, config)],
        },
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _clip_ids(plan: ClipPlan) -> dict:
    return {part: [c.video_id for c in getattr(plan, part)] for part in ("train", "val", "test")}


# -- the stage ----------------------------------------------------------------------------------------------
def run(config: TrainConfig, resume: bool = False, log=print, verbose: int = 2) -> dict:
    """Train (or, with `resume`, continue) the run at `config.out`. Returns a summary of the outcome.
    The run directory is locked throughout: a second train, `--resume` or eval on it is refused."""
    config.validate()
    out = Path(config.out)
    if not resume:
        _check_new_run_dir(out)  # at once, before reading the cache; again below under the lock
    elif not out.is_dir():
        raise UcfpipeError(f"--resume: {out} is not a run directory")
    store = FeatureStore(config.features)
    split = datasets.read_split(datasets.of_cache(store.config), config.splits, config.split)
    check_labels(split, store)
    plan = plan_clips(split, store, config)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UcfpipeError(f"cannot create the run directory {out}: {err.strerror}; choose a writable --out") from None
    with runs.lock_run(out):
        if not resume:
            # Another train may have started here since the first check; a run that never trained is cleared.
            _check_new_run_dir(out, clear=True)
        try:
            return _run_locked(config, out, store, split, plan, resume, log, verbose)
        except BaseException:
            if not resume and (not (out / runs.RUN).is_file() or _never_trained(out)):
                _remove_unstarted(out, created)
            raise


def _remove_unstarted(out: Path, created: bool) -> None:
    """A new run stopped before it finished an epoch: leave no half-made run directory (a rerun of the same
    command would refuse it), only what was there before."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    # run.json goes last: should this be cut short, what is left is still a run that never trained, which
    # the next `train --out` here clears.
    shutil.rmtree(out / runs.CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(out / "tensorboard", ignore_errors=True)  # plots.TENSORBOARD: a writer may have made it
    for name in (runs.CLIPS, runs.CONFIG, runs.HISTORY, runs.CURVES, runs.RUN):
        (out / name).unlink(missing_ok=True)
    for name in (runs.CLIPS, runs.CONFIG, runs.RUN, runs.HISTORY, runs.CURVES):
        for tmp in out.glob(files.temp_glob(name)):
            tmp.unlink(missing_ok=True)


def _run_locked(config: TrainConfig, out: Path, store: FeatureStore, split: datasets.Split, plan: ClipPlan,
                resume: bool, log, verbose: int) -> dict:
    views = training_views(store, config)
    loaded_bytes = feature_bytes(store, len(plan.train) * len(views) + len(plan.val))
    in_memory = loaded_bytes <= config.memory_limit_gb * 2**30
    where_to = placement(config.distribute, config.batch_size)
    resume_hint = f"`ucfpipe train --resume --out {out}`"
    try:
        record, state = _open_run(out, config, store, split, plan, in_memory, resume, where_to)
        return _fit(config, out, store, split, plan, views, loaded_bytes, in_memory, where_to, record, state, log, verbose)
    except KeyboardInterrupt:
        if not (out / runs.RUN).is_file() or (not resume and _never_trained(out)):
            raise  # the run never finished an epoch: `run` removes what there is, the same command starts it again
        done = runs.read_json(out / runs.CHECKPOINTS / runs.STATE, runs.STATE_FIELDS)["epoch"] if (out / runs.CHECKPOINTS / runs.STATE).is_file() else 0
        raise TrainingInterrupted(f"interrupted after epoch {done}; continue with {resume_hint}") from None
    except files.DiskFull as err:
        if not (out / runs.RUN).is_file() or (not resume and _never_trained(out)):
            raise
        # The last checkpoint is whole (its state is written last), so the run goes on from there.
        raise files.DiskFull(f"{str(err).removesuffix('; ' + files.RERUN)}; free space and continue with {resume_hint}") from None


def _fit(config, out, store, split, plan, views, loaded_bytes, in_memory, where_to, record, state, log, verbose) -> dict:
    seed_everything(config.seed)
    num_classes = len(split.classes)
    # Training may draw any of `views` (position 0 is the centre view, which normalisation statistics use);
    # validation always sees the centre view, unaugmented, as evaluation does.
    train_source = load_source(store, [c.video_id for c in plan.train], in_memory, views=views)
    val_source = load_source(store, [c.video_id for c in plan.val], in_memory)
    with where_to.scope():  # variables made here are replicated over the devices of data parallelism
        model = _restore_model(out, state, log) if state else _new_model(config, store, num_classes, train_source)
    initial_epoch = state["epoch"] if state else 0

    where = f"in memory ({loaded_bytes / 2**20:.0f} MiB)" if in_memory else "streamed from the cache"
    augment = [f"views {','.join(store.views[v] for v in views)}"] if len(views) > 1 else []
    augment += [f"{name.replace('_', ' ')} {getattr(config, name)}" for name in ("time_jitter", "step_drop") if getattr(config, name)]
    if augment:
        log(f"training augmentation: {'; '.join(augment)} (validation and evaluation see the centre view as stored)")
    log(f"split {split.number}: training on {len(plan.train)} clips ({_held(plan, 'train')}), validating on "
        f"{len(plan.val)} ({_held(plan, 'val')}); the {len(plan.test)} test clips are left to "
        f"`ucfpipe eval`; features {where}; {model.count_params():,} parameters")
    if where_to.mode == "data" and where_to.replicas == 1:
        log(f"distribute = \"data\" but only one device is visible ({where_to.devices[0]}): training runs on it alone")
    elif where_to.mode == "data":
        log(f"data parallel over {where_to.replicas} devices ({', '.join(where_to.devices)}): each step splits its "
            f"{config.batch_size} clips into {config.batch_size // where_to.replicas} per device")

    from ucfpipe.stage_two.plots import tensorboard_log

    board = tensorboard_log(out, log=log)
    keeper = RunKeeper(out, config.monitor, config.patience, state, log=log, board=board)
    train_batches = ClipBatches(train_source, [c.label for c in plan.train], num_classes, config.batch_size,
                                shuffle_seed=config.seed, first_pass=initial_epoch, random_views=len(views) > 1,
                                time_jitter=config.time_jitter, step_drop=config.step_drop,
                                multiple_of=where_to.replicas, pad_weighting="step")
    val_batches = ClipBatches(val_source, [c.label for c in plan.val], num_classes, config.batch_size,
                              multiple_of=where_to.replicas, pad_weighting="pass")
    try:
        if initial_epoch < config.epochs and not keeper.state["stopped_early"]:
            interrupts.check()
            # Keras' own per-epoch line first, then the keeper's note about it.
            progress = [keras.callbacks.ProgbarLogger()] if verbose else []
            with where_to.scope():
                model.fit(train_batches, validation_data=val_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                          callbacks=progress + [keeper], verbose=verbose, shuffle=False)
            interrupts.check()
    finally:
        if board is not None:
            board.close()
    if keeper.diverged_at is not None:
        raise UcfpipeError(
            f"training diverged: the loss was not finite at epoch {keeper.diverged_at}; lower --learning-rate "
            f"(now {config.learning_rate}) or keep --clipnorm on; {out} can be deleted"
        )
    return _finish(out, config, record, keeper.state, log)


def training_views(store: FeatureStore, config: TrainConfig) -> list[int]:
    """Store view indices training draws from: every stored view with train_views "all", else the centre."""
    if config.train_views == "center" or len(store.views) == 1:
        return [0]
    return list(range(len(store.views)))


def _open_run(out: Path, config: TrainConfig, store: FeatureStore, split: datasets.Split, plan: ClipPlan,
              in_memory: bool, resume: bool, where_to: Placement) -> tuple[dict, dict | None]:
    """Write a new run's record, or check that a resumed run meets the cache and clips it started with.
    Returns the record and the last checkpoint's state (None: start from the first epoch)."""
    state = None
    if resume:
        previous = runs.Run(out)
        previous.check_cache(store)
        if previous.clip_ids != _clip_ids(plan):
            raise UcfpipeError(
                f"the clips of split {config.split} in {config.splits} are not the ones {out} was trained on; "
                "pass the --splits folder of the original run, or start a new run"
            )
        record = previous.record
        record["cache"]["directory"] = str(Path(config.features).resolve())
        record["splits_dir"] = str(Path(config.splits).resolve())
        state_path = out / runs.CHECKPOINTS / runs.STATE
        state = runs.read_json(state_path, runs.STATE_FIELDS) if state_path.is_file() else None
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = _record(config, store, split, plan, in_memory)
        files.write_json(out / runs.CLIPS, _clip_ids(plan))
    record["placement"] = where_to.describe()  # a resumed run may continue on other devices: the latest is kept
    files.write_json(out / runs.CONFIG, recorded(config))
    files.write_json(out / runs.RUN, record)
    return record, state


def _new_model(config: TrainConfig, store: FeatureStore, num_classes: int, train_source) -> keras.Model:
    mean, variance = feature_statistics(iterate_features(train_source))  # training clips only
    model = build_classifier(
        store.num_steps, store.feature_shape, num_classes, mean, variance,
        cell=config.cell, units=config.units, layers=config.layers,
        bidirectional=config.bidirectional, dropout=config.dropout,
    )
    return compile_classifier(model, config.learning_rate, config.weight_decay, config.clipnorm, config.label_smoothing)


def _restore_model(out: Path, state: dict, log) -> keras.Model:
    """The last epoch's model with its optimizer state, and its random generators where they were."""
    model = runs.load_model(out / runs.CHECKPOINTS / state["checkpoint"], compile=True)
    for variable, value in zip(random_states(model), state.get("random_states", [])):
        variable.assign(np.asarray(value, dtype=variable.dtype))
    log(f"resuming {out} after epoch {state['epoch']} (best {state['best']:.4f} at epoch {state['best_epoch']})")
    return model


def _finish(out: Path, config: TrainConfig, record: dict, state: dict, log) -> dict:
    from ucfpipe.stage_two.plots import TENSORBOARD, plot_curves

    plot_curves(state["history"], out / runs.CURVES, state["best_epoch"], config.monitor)
    record.update(
        status="finished",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        best={"epoch": state["best_epoch"], "monitor": config.monitor, "value": state["best"]},
        epochs_run=state["epoch"],
        stopped_early=state["stopped_early"],
        seconds=round(sum(row["seconds"] for row in state["history"]), 1),
    )
    files.write_json(out / runs.RUN, record)
    shutil.rmtree(out / runs.CHECKPOINTS, ignore_errors=True)  # only `--resume` needs it
    stop = f"stopped early after {state['epoch']} epochs" if state["stopped_early"] else f"ran {state['epoch']} epochs"
    log(f"done: {stop}; best {config.monitor} {state['best']:.4f} at epoch {state['best_epoch']}")
    for name, what in ((runs.MODEL, "best model"), (runs.HISTORY, "per-epoch log"), (runs.CURVES, "loss/accuracy curves"),
                       (runs.RUN, "cache fingerprint, classes, groups, versions"), (runs.CONFIG, "settings"),
                       (runs.CLIPS, "train/val/test video ids"),
                       (TENSORBOARD, f"TensorBoard logs (tensorboard --logdir {out.parent})")):
        if (out / name).exists():
            log(f"  {out / name}: {what}")
    log(f"next: ucfpipe eval --run {out}")
    return {"run": str(out), "best_epoch": state["best_epoch"], "best": state["best"], "monitor": config.monitor,
            "epochs_run": state["epoch"], "stopped_early": state["stopped_early"], "history": state["history"],
            "val_groups": record["data"]["val_groups"]}


def _held(plan: ClipPlan, part: str) -> str:
    """What the part of the training list was cut along, for the log."""
    if plan.holdout == "groups":
        return f"{'held-out ' if part == 'val' else ''}groups {_groups(plan.val_groups if part == 'val' else plan.train_groups)}"
    if plan.holdout == "sources":
        sources = {c.source for c in getattr(plan, part)} - {""}
        # HMDB51's source films, or your own videos' gNN groups and single files (folders with mixed names)
        return f"{'held-out ' if part == 'val' else ''}{len(sources)} sources (source videos or groups)"
    return "stratified by class, no groups known"


def _groups(groups: list[int]) -> str:
    return ",".join(f"g{g:02d}" for g in groups)
