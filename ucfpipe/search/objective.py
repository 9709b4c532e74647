"""One trial = one real `train` run: train's settings + the trial's values + seed = study seed + trial number,
validating on the same held-out groups as every other trial (drawn from the study seed). The run is staged in
a hidden directory and renamed to TRIALS/<number> when it ends (finished or pruned), so no half-made run is left.
The validation metric of every epoch goes to the pruner; when it says stop, training stops after that epoch
and the trial is pruned."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

from ucfpipe.config import TrainConfig
from ucfpipe.core import files
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.search import space as spaces
from ucfpipe.search.study import worker_name


class InvalidTrial(Exception):
    """The trial's values make no valid train configuration (e.g. a cell refusing a setting): failed, not run."""


QUIET = {"log": lambda *_: None, "verbose": 0}  # train's own lines; tune prints one per trial


def trial_config(base: TrainConfig, params: dict, seed: int, out: Path) -> TrainConfig:
    config = dataclasses.replace(base, **params, seed=seed, out=str(out))
    config._file_keys = {}
    return config


def train_run(base: TrainConfig, params: dict, seed: int, holdout_seed: int, out: Path | None, callbacks=()) -> dict:
    """One `train` run of these settings, validating on the groups `holdout_seed` draws. It is staged and renamed
    to `out` when it ends, so one cut short leaves nothing; `out` None: a temporary folder, removed after."""
    from ucfpipe.stage_two import train

    def run(directory: Path) -> dict:
        return train.run(trial_config(base, params, seed, directory), callbacks=callbacks, holdout_seed=holdout_seed,
                         **QUIET)

    if out is None:
        scratch = Path(tempfile.mkdtemp(prefix="ucfpipe-trial-"))
        try:
            return run(scratch / "run")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    with files.replacing_dir(out) as staging:
        return run(staging)


def make_objective(base: TrainConfig, space: dict, study_seed: int, trials_dir: Path | None):
    """The function Optuna calls per trial. `trials_dir` None: the run goes to a temp dir, removed after."""
    import keras
    import optuna

    class _Report(keras.callbacks.Callback):
        def __init__(self, trial, exempt: bool):
            super().__init__()
            self.trial, self.exempt, self.pruned = trial, exempt, False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(base.monitor)
            if value is None:
                return
            self.trial.report(float(value), epoch)
            if not self.exempt and self.trial.should_prune():  # trial 0 (train's defaults) always runs to the end
                self.pruned = True
                self.model.stop_training = True

    def objective(trial) -> float:
        params = spaces.suggest(trial, space)
        seed = study_seed + trial.number
        trial.set_user_attr("seed", seed)
        try:
            trial_config(base, params, seed, Path("unused")).validate()
        except UcfpipeError as err:
            trial.set_user_attr("invalid", str(err))
            raise InvalidTrial(str(err)) from None
        report = _Report(trial, bool(trial.user_attrs.get("default")))
        started = time.monotonic()
        final = trials_dir / str(trial.number) if trials_dir is not None else None
        try:
            summary = train_run(base, params, seed, study_seed, final, callbacks=[report])
            if final is not None:
                trial.set_user_attr("run", str(final.resolve()))
        except Interrupted:
            raise KeyboardInterrupt from None  # the trial turns FAIL; `tune` says "rerun the same command"
        trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
        if report.pruned:
            raise optuna.TrialPruned()
        return float(summary["best"])

    return objective


def tag_worker(trial) -> None:
    trial.set_user_attr("worker", worker_name())
