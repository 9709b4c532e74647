"""Opening a training run's directory: refusing an --out that holds another run, a new run's record, a resumed
run's checks (same cache, same clips, only RESUMABLE_OVERRIDES changed), and clearing what a run that never
finished an epoch left, so the same command starts it over. The format itself is `runs`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig, recorded, to_dict
from ucfpipe.core import files
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models.distribute import Placement
from ucfpipe.stage_two import runs
from ucfpipe.stage_two.clip_plan import ClipPlan, clip_ids, training_views

# What `--resume` may change: where the inputs are, how long to go on, and on how many devices (data
# parallelism computes what one device does); anything else would be another run.
RESUMABLE_OVERRIDES = ("features", "splits", "epochs", "memory_limit_gb", "distribute")


def never_trained(out: Path) -> bool:
    """A run directory whose run finished no epoch (stopped by a damaged cache, a kill -9, a crash before
    its first checkpoint): it holds no model and nothing to resume, so it is not a run."""
    return ((out / runs.RUN).is_file() and not (out / runs.MODEL).exists()
            and not (out / runs.CHECKPOINTS / runs.STATE).exists())


def check_new_run_dir(out: Path, clear: bool = False) -> None:
    """Refuse an --out that holds anything but a run that never trained; with `clear` (under the run's lock),
    remove such a run's files so the same command starts it over."""
    if (out / runs.RUN).exists():
        if not never_trained(out):
            raise UcfpipeError(
                f"{out} already holds a training run; continue an unfinished one with `ucfpipe train --resume --out {out}`, "
                "or choose another --out"
            )
        if not clear:
            return
        remove_unstarted(out, created=False)
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


def remove_unstarted(out: Path, created: bool) -> None:
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
    files.clear_stale(out, [runs.CLIPS, runs.CONFIG, runs.RUN, runs.HISTORY, runs.CURVES], held=True)


def open_run(out: Path, config: TrainConfig, store: FeatureStore, split: datasets.Split, plan: ClipPlan,
              in_memory: bool, resume: bool, where_to: Placement) -> tuple[dict, dict | None]:
    """Write a new run's record, or check that a resumed run meets the cache and clips it started with.
    Returns the record and the last checkpoint's state (None: start from the first epoch)."""
    state = None
    if resume:
        previous = runs.Run(out)
        previous.check_cache(store)
        if previous.clip_ids != clip_ids(plan):
            raise UcfpipeError(
                f"the clips of split {config.split} in {config.splits} are not the ones {out} was trained on; "
                "pass the --splits folder of the original run, or start a new run"
            )
        record = previous.relocated(config.features, config.splits)
        state = checkpoint_state(out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        record = _record(config, store, split, plan, in_memory)
        files.write_json(out / runs.CLIPS, clip_ids(plan))
    record["placement"] = where_to.describe()  # a resumed run may continue on other devices: the latest is kept
    files.write_json(out / runs.CONFIG, recorded(config))
    files.write_json(out / runs.RUN, record)
    return record, state


def checkpoint_state(out: Path) -> dict | None:
    """The last checkpoint's state.json (None: no epoch finished since the run started or last finished)."""
    path = out / runs.CHECKPOINTS / runs.STATE
    return runs.read_json(path, runs.STATE_FIELDS) if path.is_file() else None
