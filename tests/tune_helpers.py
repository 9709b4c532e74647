"""What the tune tests share (test_tune.py, test_tune_postgres.py): the tiny search space and training settings
(conftest's `tune_setup` writes them beside the tiny cache), tune's arguments, a study's trials, and a `tune`
command in a process and session of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def tune_args(tune_setup, *more, trials: int = 3) -> list[str]:
    return ["tune", "--features", str(tune_setup["cache"]), "--splits", str(tune_setup["splits"]), "--split", "1",
            "--config", str(tune_setup["config"]), "--space", str(tune_setup["space"]), "--trials", str(trials), *map(str, more)]


def study_trials(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    name = optuna.study.get_all_study_names(url)[0]
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


HEARTBEAT = "1,3"  # seconds between a trial's heartbeats, and until a silent one is failed: a killed trial fails soon


def spawn(warm, args):
    """`ucfpipe ARGS` in a process (and session) of its own, started warm (tests/warm_process.py): the tests
    signal or kill it mid-trial, never during start-up."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UCFPIPE_TUNE_HEARTBEAT": HEARTBEAT}
    return warm.start(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
