"""`ucfpipe tune`: the search for the best stage-two settings (ucfpipe.search), as one command."""

from __future__ import annotations

import sys

import click

from ucfpipe.commands.options import config_option, settings_options, user_errors
from ucfpipe.config import TrainConfig, load_config

FIXED_FLAGS = ("features", "splits", "split", "epochs", "patience", "val_groups", "monitor", "memory_limit_gb",
               "allow_missing")


@click.command()
@config_option("train")
@settings_options(TrainConfig, *FIXED_FLAGS)
@click.option("--trials", type=int, default=20, show_default=True, help="Finished trials (complete or pruned) the study ends with, over all processes.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Start no trial after this many seconds; then retrain the best so far.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), metavar="DIR", help="The search's directory: tune.json, study.db, trials/, trials.csv, best.toml, best/, result.json.")
@click.option("--storage", metavar="URL", help="Optuna database URL shared by every process of the search, e.g. postgresql+psycopg2://USER@HOST:PORT/DB.  [default: sqlite:///DIR/study.db]")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default="stages/tune.toml", show_default=True, help="The search space: train settings as choices, int or float ranges (docs/tune.md).")
@click.option("--seed", type=int, default=0, show_default=True, help="Study seed: the sampler's, the validation groups'; trial i trains with SEED+i.")
@click.option("--jobs", type=int, default=1, show_default=True, help="Processes running trials on this machine (JOBS-1 `--worker`s beside this one).")
@click.option("--pruner", type=click.Choice(["median", "hyperband"]), default="median", show_default=True, help="Stops hopeless trials on their per-epoch validation metric.")
@click.option("--study", "study_name", metavar="NAME", help="The study's name in the storage.  [default: ucfpipe-<fingerprint>-split<k>]")
@click.option("--worker", is_flag=True, help="Only run trials of the study at --storage until it has --trials finished ones (no --out, no retraining).")
@click.option("--ensemble-top", type=int, metavar="N", help="Also train the N best trials as one ensemble (DIR/ensemble).")
@click.option("--trials-dir", type=click.Path(file_okay=False), hidden=True)
@user_errors
def tune(config_file, trials, timeout, out_dir, storage, space_file, seed, jobs, pruner, study_name, worker, ensemble_top,
         trials_dir, **flags):
    """Search train's settings with Optuna on validation groups only; retrain the best and score the test list once.

    Trial 0 is train's defaults; hopeless trials are pruned; several `tune --worker`s (other machines too) share one
    --storage. Exit status 0 when done, 2 for bad input, 130 when interrupted (143 by SIGTERM): the same command
    goes on."""
    from ucfpipe.search import tune as search

    base = load_config(TrainConfig, config_file, {**flags, "out": "(trials)"})
    search.run(search.Search(base=base, trials=trials, space=space_file, out=out_dir, storage=storage, timeout=timeout,
                             seed=seed, jobs=jobs, pruner=pruner, study=study_name, worker=worker,
                             ensemble_top=ensemble_top, trials_dir=trials_dir),
               argv=["ucfpipe", *sys.argv[1:]], log=click.echo)
