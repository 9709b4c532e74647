"""After the search: the best settings as DIR/best.toml (what `train --config` takes), retrained like `train`
(early stopping on the same validation groups) into DIR/best, and the test list scored once, by `eval`; trial 0's
run (train's defaults) is scored the same way for the table; `--ensemble-top N` trains the N best as an ensemble."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from ucfpipe.config import TrainConfig, recorded
from ucfpipe.core import files
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.search.objective import QUIET, train_run


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def settings_toml(config: TrainConfig, *comments: str) -> str:
    """Every train setting of `config` as a TOML file `train --config` takes (paths absolute, no `out`)."""
    settings = recorded(dataclasses.replace(config, out=""))
    return "".join(f"# {line}\n" for line in comments) + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())


def write_best_toml(path: Path, base: TrainConfig, params: dict, seed: int, trial: int, value: float) -> None:
    files.write_text(path, settings_toml(dataclasses.replace(base, **params, seed=seed),
                                         f"The best of `ucfpipe tune`: trial {trial}, validation {base.monitor} {value:.4f}.",
                                         "Train it again with: ucfpipe train --config best.toml --out RUN_DIR"))


def retrain(base: TrainConfig, params: dict, seed: int, out: Path) -> dict:
    """Train like `train` would with these settings (the study seed: the same validation groups), staged."""
    if out.exists():
        shutil.rmtree(out)  # an older best (the study went on since) or one cut short: made again
    return train_run(base, params, seed, seed, out)


def test_scores(run_dir: Path) -> dict:
    """`eval` of the run (or ensemble): the test list, read here for the first time."""
    from ucfpipe.stage_two import evaluate

    metrics = evaluate.run(run_dir, log=QUIET["log"])
    return {"top1": metrics["top1"], "top5": metrics["top5"], "mean_class": metrics["mean_class_accuracy"]}


def ensemble_top(base: TrainConfig, ranked: list, seed: int, out: Path) -> dict:
    """The `ranked` trials (best first) retrained as members of one ensemble at `out`, then eval'd."""
    from ucfpipe.stage_two import ensemble

    if len(ranked) < 2:
        raise UcfpipeError(f"--ensemble-top needs at least two completed trials, the study has {len(ranked)}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    names = [f"member-trial{trial.number}" for trial in ranked]
    record = {"format": ensemble.FORMAT, "members": names, "status": "running",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    for name, trial in zip(names, ranked):
        retrain(base, trial.params, seed, out / name)
    ensemble.finish(out, record)
    return {"trials": [trial.number for trial in ranked], "dir": str(out.resolve()), "test": test_scores(out)}
