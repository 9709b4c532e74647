"""Stage two, training: cached features of one official split's training list -> a sequence classifier
(LSTM, GRU or Transformer).

Validation comes from the training list only and holds out whole groups (clips of one group share actors
and scene, so a random clip split would leak); the test list is recorded but never read here. The best
epoch by validation is kept, and an epoch checkpoint lets `--resume` continue an interrupted run.

Read top to bottom: `run` (the lock, and clearing a run that never trained), `_fit` (inputs, model, the fit
loop), `_finish` (the record and the log). Beside it: `clip_plan` (which clips and views), `run_setup` (the run
directory, its record and `resume_config`), `keeper` (the callback that keeps best model, history, checkpoint).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig
from ucfpipe.core import files, interrupts
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.core.rng import seed_everything
from ucfpipe.models.classifier import build_classifier, compile_classifier, feature_statistics
from ucfpipe.models.distribute import Placement, placement
from ucfpipe.stage_two import runs
from ucfpipe.stage_two.batches import ClipBatches, feature_bytes, iterate_features, load_source
from ucfpipe.stage_two.clip_plan import ClipPlan, check_labels, holdout_note, plan_clips, training_views
from ucfpipe.stage_two.keeper import RunKeeper, random_states
from ucfpipe.stage_two.run_setup import check_new_run_dir, checkpoint_state, never_trained, open_run, remove_unstarted


class TrainingInterrupted(Interrupted):
    """Stopped after a finished epoch: `--resume` continues from it."""


def run(config: TrainConfig, resume: bool = False, log=print, verbose: int = 2, callbacks=(),
        holdout_seed: int | None = None) -> dict:
    """Train (or, with `resume`, continue) the run at `config.out`. Returns a summary of the outcome.
    The run directory is locked throughout: a second train, `--resume` or eval on it is refused.
    `callbacks`: Keras callbacks called after the run's own each epoch (`ucfpipe tune` reports to its pruner);
    `holdout_seed`: draw the validation groups from this seed instead of `config.seed` (a search's trials
    vary their seed but must all validate on the same groups)."""
    config.validate()
    out = Path(config.out)
    if not resume:
        check_new_run_dir(out)  # at once, before reading the cache; again below under the lock
    elif not out.is_dir():
        raise UcfpipeError(f"--resume: {out} is not a run directory")
    store = FeatureStore(config.features)
    split = datasets.read_split(datasets.of_cache(store.config), config.splits, config.split)
    check_labels(split, store)
    plan = plan_clips(split, store, config if holdout_seed is None else dataclasses.replace(config, seed=holdout_seed))
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UcfpipeError(f"cannot create the run directory {out}: {err.strerror}; choose a writable --out") from None
    with runs.lock_run(out):
        if not resume:
            # Another train may have started here since the first check; a run that never trained is cleared.
            check_new_run_dir(out, clear=True)
        try:
            return _run_locked(config, out, store, split, plan, resume, log, verbose, list(callbacks))
        except BaseException:
            if not resume and (not (out / runs.RUN).is_file() or never_trained(out)):
                remove_unstarted(out, created)
            raise


def _run_locked(config: TrainConfig, out: Path, store: FeatureStore, split: datasets.Split, plan: ClipPlan,
                resume: bool, log, verbose: int, callbacks: list | None = None) -> dict:
    inputs = _Inputs(config, store, plan)
    resume_hint = f"`ucfpipe train --resume --out {out}`"
    try:
        record, state = open_run(out, config, store, split, plan, inputs.in_memory, resume, inputs.where_to)
        return _fit(config, out, store, split, plan, inputs, record, state, log, verbose, callbacks or [])
    except KeyboardInterrupt:
        if not (out / runs.RUN).is_file() or (not resume and never_trained(out)):
            raise  # the run never finished an epoch: `run` removes what there is, the same command starts it again
        done = (checkpoint_state(out) or {"epoch": 0})["epoch"]
        raise TrainingInterrupted(f"interrupted after epoch {done}; continue with {resume_hint}") from None
    except files.DiskFull as err:
        if not (out / runs.RUN).is_file() or (not resume and never_trained(out)):
            raise
        # The last checkpoint is whole (its state is written last), so the run goes on from there.
        raise files.DiskFull(f"{str(err).removesuffix('; ' + files.RERUN)}; free space and continue with {resume_hint}") from None


class _Inputs:
    """Where training's features come from: the stored views drawn, whether they fit in memory, the devices."""

    def __init__(self, config: TrainConfig, store: FeatureStore, plan: ClipPlan):
        self.views = training_views(store, config)
        self.loaded_bytes = feature_bytes(store, len(plan.train) * len(self.views) + len(plan.val))
        self.in_memory = self.loaded_bytes <= config.memory_limit_gb * 2**30
        self.where_to: Placement = placement(config.distribute, config.batch_size)

    def batches(self, config: TrainConfig, store: FeatureStore, plan: ClipPlan, num_classes: int,
                first_pass: int) -> tuple[ClipBatches, ClipBatches]:
        """Training batches (any of the views, augmented, shuffled by the seed from epoch `first_pass` on) and
        validation batches (the centre view, unaugmented, as evaluation sees it)."""
        train = ClipBatches(self.train_source, [c.label for c in plan.train], num_classes, config.batch_size,
                            shuffle_seed=config.seed, first_pass=first_pass, random_views=len(self.views) > 1,
                            time_jitter=config.time_jitter, step_drop=config.step_drop,
                            multiple_of=self.where_to.replicas, pad_weighting="step")
        val = ClipBatches(self.val_source, [c.label for c in plan.val], num_classes, config.batch_size,
                          multiple_of=self.where_to.replicas, pad_weighting="pass")
        return train, val

    def load(self, store: FeatureStore, plan: ClipPlan) -> None:
        # Position 0 of `views` is the centre view, which normalisation statistics use.
        self.train_source = load_source(store, [c.video_id for c in plan.train], self.in_memory, views=self.views)
        self.val_source = load_source(store, [c.video_id for c in plan.val], self.in_memory)


def _fit(config: TrainConfig, out: Path, store: FeatureStore, split: datasets.Split, plan: ClipPlan,
         inputs: _Inputs, record: dict, state: dict | None, log, verbose: int, callbacks: list) -> dict:
    seed_everything(config.seed)
    num_classes = len(split.classes)
    inputs.load(store, plan)
    with inputs.where_to.scope():  # variables made here are replicated over the devices of data parallelism
        model = _restore_model(out, state, log) if state else _new_model(config, store, num_classes, inputs.train_source)
    initial_epoch = state["epoch"] if state else 0
    _log_setup(config, store, split, plan, inputs, model, log)

    from ucfpipe.stage_two.plots import tensorboard_log

    board = tensorboard_log(out, log=log)
    keeper = RunKeeper(out, config.monitor, config.patience, state, log=log, board=board)
    train_batches, val_batches = inputs.batches(config, store, plan, num_classes, initial_epoch)
    try:
        if initial_epoch < config.epochs and not keeper.state["stopped_early"]:
            interrupts.check()
            # Keras' own per-epoch line first, then the keeper's note about it.
            progress = [keras.callbacks.ProgbarLogger()] if verbose else []
            with inputs.where_to.scope():
                model.fit(train_batches, validation_data=val_batches, epochs=config.epochs, initial_epoch=initial_epoch,
                          callbacks=progress + [keeper] + callbacks, verbose=verbose, shuffle=False)
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


def _log_setup(config: TrainConfig, store: FeatureStore, split: datasets.Split, plan: ClipPlan, inputs: _Inputs,
               model: keras.Model, log) -> None:
    """What this run trains on, where its features are, on which devices."""
    where = f"in memory ({inputs.loaded_bytes / 2**20:.0f} MiB)" if inputs.in_memory else "streamed from the cache"
    augment = [f"views {','.join(store.views[v] for v in inputs.views)}"] if len(inputs.views) > 1 else []
    augment += [f"{name.replace('_', ' ')} {getattr(config, name)}" for name in ("time_jitter", "step_drop") if getattr(config, name)]
    if augment:
        log(f"training augmentation: {'; '.join(augment)} (validation and evaluation see the centre view as stored)")
    log(f"split {split.number}: training on {len(plan.train)} clips ({holdout_note(plan, 'train')}), validating on "
        f"{len(plan.val)} ({holdout_note(plan, 'val')}); the {len(plan.test)} test clips are left to "
        f"`ucfpipe eval`; features {where}; {model.count_params():,} parameters")
    where_to = inputs.where_to
    if where_to.mode == "data" and where_to.replicas == 1:
        log(f"distribute = \"data\" but only one device is visible ({where_to.devices[0]}): training runs on it alone")
    elif where_to.mode == "data":
        log(f"data parallel over {where_to.replicas} devices ({', '.join(where_to.devices)}): each step splits its "
            f"{config.batch_size} clips into {config.batch_size // where_to.replicas} per device")


def _new_model(config: TrainConfig, store: FeatureStore, num_classes: int, train_source) -> keras.Model:
    mean, variance = feature_statistics(iterate_features(train_source))  # training clips only
    model = build_classifier(
        store.num_steps, store.feature_shape, num_classes, mean, variance,
        cell=config.cell, units=config.units, layers=config.layers,
        bidirectional=config.bidirectional, dropout=config.dropout, heads=config.heads,
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
