"""The stages: extract (stage one), finetune (its backbone), train, eval, report and compare (stage two)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ucfpipe.commands.options import (
    config_option,
    incomplete,
    no_progress_option,
    run_option,
    setting_option,
    settings_options,
    stdout_echo,
    user_errors,
)
from ucfpipe.config import ExtractConfig, FinetuneConfig, TrainConfig, load_config
from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.destinations import output


@click.command()
@config_option("extract")
@settings_options(ExtractConfig, "videos", "splits", "dataset", "out", "frames", "size", "backbone", "weights", "layer",
                  "pooling", "dtype", "precision", "batch_size", "workers", "shard_clips", "shard_seconds", "seed", "views",
                  "shard", "allow_missing", "engine", "address")
@no_progress_option()
@user_errors
def extract(config_file, progress, **flags):
    """Stage one: backbone (VGG16 by default) features of T uniformly sampled frames of every listed clip, into a resumable cache.

    Exit status 0 when every clip on disk was extracted, 3 when some clips could not be read (listed in
    the cache's manifest and retried by the next run), 2 for bad input, 130 when interrupted (143 by SIGTERM)."""
    from ucfpipe.stage_one import extract as stage

    config = load_config(ExtractConfig, config_file, flags)
    summary = stage.run(config, progress=progress)
    if summary["failed"]:
        raise incomplete(f"{len(summary['failed'])} clips could not be read (see 'report' in "
                         f"{Path(config.out) / 'manifest.json'}); fix or remove them and rerun to retry")


@click.command()
@config_option("finetune")
@settings_options(FinetuneConfig)
@user_errors
def finetune(config_file, **flags):
    """Transfer learning: train the backbone's last stage on the split's training frames; extract with --weights OUT."""
    config = load_config(FinetuneConfig, config_file, flags)  # bad settings fail before Keras loads
    if os.path.lexists(config.out):  # a folder, a device: refused before Keras (a missing folder is made)
        output(config.out, "--out", stdout=False, in_place=False)
    from ucfpipe.stage_one import finetune as stage

    stage.run(config, log=click.echo)


# -- stage two ------------------------------------------------------------------------------------------------
@click.command()
@config_option("train")
@settings_options(TrainConfig)
@click.option("--resume", is_flag=True, help="Continue the interrupted run at --out from its last epoch, with its own settings.")
@click.option("--seeds", help="Ensemble: train one member per seed, e.g. 1,2,3, into --out/member-<cell>-seed<k>/.")
@click.option("--cells", help="Ensemble: one member per cell (and seed), e.g. lstm,gru.")
@user_errors
def train(config_file, resume, seeds, cells, **flags):
    """Stage two: train an LSTM (--cell: GRU, Transformer) on one split's cached training features, validating on
    held-out groups.

    With --seeds and/or --cells, an ensemble: one run per member under --out plus --out/ensemble.json.
    Exit status 0 when training finished, 2 for bad input, 130 when interrupted (resume with --resume)."""
    from ucfpipe.config import TrainConfig
    from ucfpipe.stage_two import train as stage

    if seeds or cells:
        from ucfpipe.stage_two import ensemble

        if resume:
            raise UcfpipeError("an ensemble resumes without --resume: rerun the same `train --seeds/--cells` command")
        config = load_config(TrainConfig, config_file, flags)
        ensemble.train(config, list(comma_list(seeds, "--seeds", int, repeats="refuse", empty_ok=True)),
                       list(comma_list(cells, "--cells", repeats="refuse", empty_ok=True)), log=click.echo)
        return
    if resume:
        if not flags["out"]:
            raise UcfpipeError("--resume needs --out RUN_DIR, the run to continue")
        if config_file:
            click.echo(f"--resume continues with {Path(flags['out']) / 'config.json'}; {config_file} is not read")
        from ucfpipe.stage_two.run_setup import resume_config

        config = resume_config(flags["out"], flags)
    else:
        config = load_config(TrainConfig, config_file, flags)
    stage.run(config, resume=resume, log=click.echo)


@click.command("eval")
@run_option("Run directory made by `ucfpipe train`.")
@click.option("--features", type=click.Path(), help="Feature cache, if not where the run found it (same fingerprint).")
@click.option("--splits", "--split-dir", "splits", type=click.Path(), help="The ucfTrainTestlist/ folder, if not the run's.")
@click.option("--allow-missing", is_flag=True, default=None, help="Score the test clips present when the cache lacks some.")
@click.option("--baseline", is_flag=True, help="Also score an order-blind reference (logistic regression on time-averaged features).")
@click.option("--tta", is_flag=True, help="Also score probabilities averaged over every stored view of each clip (metrics.json: tta).")
@user_errors
def eval_command(run_dir, features, splits, allow_missing, baseline, tta):
    """Score a run's best model (or an ensemble's mean) on its split's test list: metrics.json, per_class.csv, confusion.png, report.html."""
    from ucfpipe.stage_two import evaluate

    evaluate.run(run_dir, features=features, splits=splits, allow_missing=allow_missing, baseline=baseline, tta=tta,
                 log=click.echo)


@click.command()
@click.argument("run_dirs", nargs=-1, type=click.Path())
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a markdown table (figures x splits), as pasted in the README.")
@click.option("--require-margin", type=float, metavar="M",
              help="Exit 3 unless every run's LSTM top-1 beats its order-blind top-1 (eval --baseline) by at least M.")
@click.option("--html", type=click.Path(), metavar="FILE",
              help="Also write one self-contained page of every run (headline table, curves, confusion, misclassified "
                   "clips); - writes it to standard output (the table then goes to stderr).")
@click.option("--protocol", type=click.Path(file_okay=False), metavar="ROOT",
              help="Instead of RUN_DIRs: the tree `make reproduce` makes (ROOT/split<k>/lstm, aug, ensemble), as one "
                   "markdown table of setups x splits with published figures beside it.")
@user_errors
def report(run_dirs, as_markdown, require_margin, html, protocol):
    """Each evaluated run's split, top-1, top-5 and mean class accuracy, then mean ± std over the runs.

    Runs of different datasets are refused; notes (and the --require-margin line) go to stderr. A `ucfpipe tune`
    directory (it holds tune.json) is a search: its default vs best table, on validation and test."""
    from ucfpipe.search import study_report
    from ucfpipe.stage_two import report as stage

    if bool(run_dirs) == bool(protocol):
        raise UcfpipeError("give either RUN_DIR... or --protocol ROOT: `ucfpipe report RUN_DIR...`")
    if protocol and require_margin is not None:
        raise UcfpipeError("--require-margin checks RUN_DIRs; with --protocol, drop it")
    study = study_report.study_of(run_dirs)
    if study is not None and require_margin is not None:
        raise UcfpipeError(f"--require-margin checks evaluated runs, and {study} is a search; drop it")
    if html is not None:
        output(html, "--html")  # a folder, a missing or read-only one: refused before any run is read
    if study is not None:
        from ucfpipe.search import report_page

        study_report.run(study, log=stdout_echo(html), as_markdown=as_markdown)
        if html is not None:
            click.echo(report_page.write(study, html), err=True)
        return
    stage.run(run_dirs, log=stdout_echo(html), as_markdown=as_markdown, require_margin=require_margin,
              warn=lambda line: click.echo(line, err=True), html=html, protocol=protocol)


@click.command()
@config_option("train")
@settings_options(TrainConfig, "features", "splits", "split")
@setting_option(TrainConfig, "out", required=True, help="New directory for the runs, compare.md and compare.json.")
@settings_options(TrainConfig, "cell", "units", "epochs", "batch_size", "val_groups", "patience")
@setting_option(TrainConfig, "seed", help="Seed of the single models; the ensemble uses SEED..SEED+MEMBERS-1.")
@click.option("--members", type=int, default=3, show_default=True, help="Ensemble size.")
@user_errors
def compare(config_file, members, **flags):
    """Baseline vs + training augmentation vs + TTA vs + ensemble vs order-blind: one markdown table
    (top-1, top-5, mean class accuracy, wall time), also written to OUT/compare.md. The view rows need a cache
    extracted with --views."""
    from ucfpipe.config import TrainConfig
    from ucfpipe.stage_two import compare as stage

    stage.run(load_config(TrainConfig, config_file, flags), members=members, log=click.echo)
