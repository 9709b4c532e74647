"""`ucfpipe tune` end to end on the tiny synthetic cache: K trials, best.toml, best/, result.json; a rerun prints
without training; kill -9 mid-trial then the same command; two processes on one SQLite study; the test list
unreadable during the search; another cache's study refused; bad input in one line, nothing written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_one_line_error, invoke

pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")

TINY_SPACE = """
[cell]
choices = ["lstm", "gru"]
[units]
choices = [8, 16]
[dropout]
float = [0.0, 0.5]
[learning_rate]
float = [1e-3, 1e-2]
log = true
"""
TRAIN = """units = 8
epochs = 2
batch_size = 8
val_groups = 1
learning_rate = 3e-3
dropout = 0.2
label_smoothing = 0.0
"""
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup(synth_cache, synth_dataset, tmp_path) -> dict:
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    (tmp_path / "train.toml").write_text(TRAIN)
    return {"cache": synth_cache, "splits": synth_dataset["splits"], "space": tmp_path / "space.toml",
            "config": tmp_path / "train.toml", "tmp": tmp_path}


def tune_args(setup, *more, trials: int = 3) -> list[str]:
    return ["tune", "--features", str(setup["cache"]), "--splits", str(setup["splits"]), "--split", "1",
            "--config", str(setup["config"]), "--space", str(setup["space"]), "--trials", str(trials), *map(str, more)]


def study_trials(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = optuna.study.get_all_study_names(url)[0]
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def states_of(trials) -> list[str]:
    return [t.state.name for t in trials if not t.user_attrs.get("surplus")]


def test_a_search_finishes_k_trials_retrains_the_best_and_a_rerun_only_prints(setup):
    out = setup["tmp"] / "search"
    result = invoke(*tune_args(setup, "--out", out), exit_code=0)
    assert "trial 0 complete" in result.output and "default (trial 0)" in result.output, result.output
    tune = json.loads((out / "tune.json").read_text())
    assert tune["trials"] == 3 and tune["storage"] == f"sqlite:///{out / 'study.db'}" and "cell" in tune["space"]
    trials = study_trials(tune["storage"])
    assert sum(s in ("COMPLETE", "PRUNED") for s in states_of(trials)) == 3
    first = trials[0]
    assert first.user_attrs["default"] is True and first.params == {"cell": "lstm", "units": 8, "dropout": 0.2,
                                                                     "learning_rate": 3e-3}
    assert {t.user_attrs["seed"] for t in trials} == {0, 1, 2} and all(":" in t.user_attrs["worker"] for t in trials)
    assert all((out / "trials" / str(t.number) / "run.json").is_file() for t in trials)
    result_json = json.loads((out / "result.json").read_text())
    assert result_json["finished"] == 3 and result_json["default"]["trial"] == 0
    assert set(result_json["best"]["test"]) == {"top1", "top5", "mean_class"}
    assert result_json["best"]["validation"] >= result_json["default"]["validation"]
    assert (out / "best" / "metrics.json").is_file() and (out / "trials" / "0" / "metrics.json").is_file()
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["number", "state", "value"] and {"cell", "units", "worker", "seed", "seconds"} <= set(header)
    # best.toml is what `train --config` takes
    from ucfpipe.config import TrainConfig, load_config

    best = load_config(TrainConfig, out / "best.toml", {"out": str(setup["tmp"] / "again")})
    assert best.units == result_json["best"]["params"]["units"] and best.seed == 0
    # a rerun of the finished search prints its result, trains nothing
    before = sorted(p.name for p in (out / "trials").iterdir())
    again = invoke(*tune_args(setup, "--out", out), exit_code=0)
    assert "finished earlier" in again.output and "trial 0 complete" not in again.output, again.output
    assert sorted(p.name for p in (out / "trials").iterdir()) == before
    assert len(study_trials(tune["storage"])) == len(trials)
