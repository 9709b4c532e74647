"""The stages: extract (stage one), finetune (its backbone), train, eval, report and compare (stage two)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ucfpipe.commands.options import (
    DATASET_HELP,
    DEFAULT_BACKBONE,
    config_option,
    no_progress_option,
    run_option,
    setting_option,
    stdout_echo,
    user_errors,
)
from ucfpipe.config import ExtractConfig, FinetuneConfig, TrainConfig, load_config
from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import EXIT_INCOMPLETE, UcfpipeError
from ucfpipe.core.files import output


@click.command()
@config_option("extract")
@setting_option(ExtractConfig, "videos", type=click.Path(), help="The UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi.")
@setting_option(ExtractConfig, "splits", type=click.Path(), help="The ucfTrainTestlist/ folder; every clip it lists is extracted once.")
@setting_option(ExtractConfig, "dataset", metavar="NAME", choice=False, help=DATASET_HELP)
@setting_option(ExtractConfig, "out", type=click.Path(), help="Feature cache directory.")
@setting_option(ExtractConfig, "frames", help="T, frames sampled uniformly over each whole clip.")
@setting_option(ExtractConfig, "size", help="Frames are resized to SIZE x SIZE.")
@setting_option(ExtractConfig, "backbone", metavar="NAME", choice=False, help="Image model: {choices} (see docs/backbones.md).")
@setting_option(ExtractConfig, "weights", help="imagenet, none (random, seeded) or a path to the backbone's weights file.")
@setting_option(ExtractConfig, "layer", help="Backbone layer to store.",
                default_help=f"the backbone's; {DEFAULT_BACKBONE.name}: {DEFAULT_BACKBONE.default_layer}")
@setting_option(ExtractConfig, "pooling", help="Spatial pooling; none keeps the map.")
@setting_option(ExtractConfig, "dtype", help="Storage dtype.")
@setting_option(ExtractConfig, "precision", help="Backbone compute dtype.")
@setting_option(ExtractConfig, "batch_size", help="Frames per model call.")
@setting_option(ExtractConfig, "workers", help="Decoding threads.")
@setting_option(ExtractConfig, "shard_clips", help="Clips per HDF5 shard (a shard is also written every --shard-seconds).")
@setting_option(ExtractConfig, "shard_seconds", help="Seconds of work after which a shard is written.")
@setting_option(ExtractConfig, "seed", help="Seed of --weights none.")
@setting_option(ExtractConfig, "views", help="Views stored per clip, e.g. flip,crops,time or all (see docs/stage-two.md).")
@setting_option(ExtractConfig, "shard", help="i/N: only the i-th (0-based) of N disjoint parts of the clip list; join them with `ucfpipe merge`.")
@setting_option(ExtractConfig, "allow_missing", help="Extract what is on disk when listed clips are missing.")
@setting_option(ExtractConfig, "engine", help="local: threads and the model here; ray: decode tasks and model actors on a Ray cluster (docs/ray.md).")
@setting_option(ExtractConfig, "address", help="--engine ray: auto or HOST:PORT of a running cluster; unset, a cluster "
                "is started on this machine for the run.")
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
        exc = click.ClickException(
            f"{len(summary['failed'])} clips could not be read (see 'report' in {Path(config.out) / 'manifest.json'}); "
            "fix or remove them and rerun to retry"
        )
        exc.exit_code = EXIT_INCOMPLETE
        raise exc


@click.command()
@config_option("finetune")
@setting_option(FinetuneConfig, "videos", type=click.Path(), help="The UCF-101/ folder.")
@setting_option(FinetuneConfig, "splits", type=click.Path(), help="The ucfTrainTestlist/ folder.")
@setting_option(FinetuneConfig, "dataset", metavar="NAME", choice=False, help=DATASET_HELP)
@setting_option(FinetuneConfig, "split", help="Fine-tune on this split's training clips (its test list is never read).")
@setting_option(FinetuneConfig, "out", type=click.Path(dir_okay=False), help="Backbone weights file to write (*.weights.h5).",
                default_help="weights/<backbone>_finetuned_split<split>.weights.h5")
@setting_option(FinetuneConfig, "backbone", metavar="NAME", choice=False, help="Image model to fine-tune: {choices}.")
@setting_option(FinetuneConfig, "weights", help="Starting weights: imagenet, none or a file.")
@setting_option(FinetuneConfig, "size", help="Frames are resized to SIZE x SIZE.")
@setting_option(FinetuneConfig, "frames_per_clip", help="Frames sampled uniformly from each clip, labelled with its class.")
@setting_option(FinetuneConfig, "trainable_from", help="First backbone layer to train; earlier ones stay frozen.",
                default_help=f"the backbone's last stage; {DEFAULT_BACKBONE.name}: {DEFAULT_BACKBONE.finetune_from}")
@setting_option(FinetuneConfig, "epochs", help="At most this many epochs.")
@setting_option(FinetuneConfig, "batch_size", help="Frames per step.")
@setting_option(FinetuneConfig, "learning_rate", help="Adam's learning rate: small, the pretrained filters should move, not be overwritten.")
@setting_option(FinetuneConfig, "dropout", help="Dropout before the new classifier.")
@setting_option(FinetuneConfig, "val_groups", help="Training-list groups held out for validation.")
@setting_option(FinetuneConfig, "patience", help="Epochs without improvement of validation accuracy before stopping.")
@setting_option(FinetuneConfig, "workers", help="Decoding threads.")
@setting_option(FinetuneConfig, "seed", help="Validation groups, --weights none, initialisation, dropout, frame order and flips.")
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
@setting_option(TrainConfig, "features", type=click.Path(), help="Feature cache made by `ucfpipe extract`.")
@setting_option(TrainConfig, "splits", type=click.Path(), help="The ucfTrainTestlist/ folder.")
@setting_option(TrainConfig, "split", help="Official split 1, 2 or 3: trains on its training list.")
@setting_option(TrainConfig, "out", type=click.Path(), help="Run directory to create (model, logs, curves).")
@setting_option(TrainConfig, "cell", help="Recurrent cell.")
@setting_option(TrainConfig, "units", help="Units per recurrent layer (per direction).")
@setting_option(TrainConfig, "layers", help="Stacked recurrent layers.")
@setting_option(TrainConfig, "bidirectional", "--bidirectional/--unidirectional", help="Read clips both ways.")
@setting_option(TrainConfig, "dropout", help="Dropout after each recurrent layer.")
@setting_option(TrainConfig, "epochs", help="At most this many epochs.")
@setting_option(TrainConfig, "batch_size", help="Clips per step.")
@setting_option(TrainConfig, "learning_rate", help="Adam's learning rate.")
@setting_option(TrainConfig, "weight_decay", help="Decoupled weight decay, 0 = off.")
@setting_option(TrainConfig, "clipnorm", help="Gradient norm clipping, 0 = off.")
@setting_option(TrainConfig, "label_smoothing", help="Cross-entropy label smoothing.")
@setting_option(TrainConfig, "val_groups", help="Training-list groups held out for validation (hmdb51 and folders without "
                "groups: about this many clips per class; docs/datasets.md).")
@setting_option(TrainConfig, "monitor", help="Picks the best epoch.")
@setting_option(TrainConfig, "patience", help="Epochs without improvement before stopping.")
@setting_option(TrainConfig, "memory_limit_gb", help="Load features into memory up to this size, else stream.")
@setting_option(TrainConfig, "allow_missing", help="Use the clips present when the cache lacks some of the split.")
@setting_option(TrainConfig, "seed", help="Validation groups, initialisation, dropout, batch order.")
@setting_option(TrainConfig, "train_views", help="all: each epoch a random stored view per clip.")
@setting_option(TrainConfig, "time_jitter", help="Training only: chance a step is replaced by a neighbour.")
@setting_option(TrainConfig, "step_drop", help="Training only: chance a step is dropped (previous repeated).")
@setting_option(TrainConfig, "distribute", help="data: data parallel over every device (JAX backend).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run at --out from its last epoch, with its own settings.")
@click.option("--seeds", help="Ensemble: train one member per seed, e.g. 1,2,3, into --out/member-<cell>-seed<k>/.")
@click.option("--cells", help="Ensemble: one member per cell (and seed), e.g. lstm,gru.")
@user_errors
def train(config_file, resume, seeds, cells, **flags):
    """Stage two: train an LSTM on one split's cached training features, validating on held-out groups.

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
        config = stage.resume_config(flags["out"], flags)
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

    Runs of different datasets are refused; notes (and the --require-margin line) go to stderr."""
    from ucfpipe.stage_two import report as stage

    if bool(run_dirs) == bool(protocol):
        raise UcfpipeError("give either RUN_DIR... or --protocol ROOT: `ucfpipe report RUN_DIR...`")
    if protocol and require_margin is not None:
        raise UcfpipeError("--require-margin checks RUN_DIRs; with --protocol, drop it")
    if html is not None:
        output(html, "--html")  # a folder, a missing or read-only one: refused before any run is read
    stage.run(run_dirs, log=stdout_echo(html), as_markdown=as_markdown, require_margin=require_margin,
              warn=lambda line: click.echo(line, err=True), html=html, protocol=protocol)


@click.command()
@config_option("train")
@setting_option(TrainConfig, "features", type=click.Path(), help="Feature cache (extract with --views for the view rows).")
@setting_option(TrainConfig, "splits", type=click.Path(), help="The ucfTrainTestlist/ folder.")
@setting_option(TrainConfig, "split", help="Official split 1, 2 or 3.")
@setting_option(TrainConfig, "out", required=True, type=click.Path(), help="New directory for the runs, compare.md and compare.json.")
@setting_option(TrainConfig, "cell", help="Recurrent cell.")
@setting_option(TrainConfig, "units", help="Units per recurrent layer; small keeps the comparison quick.")
@setting_option(TrainConfig, "epochs", help="At most this many epochs per model.")
@setting_option(TrainConfig, "batch_size", help="Clips per step.")
@setting_option(TrainConfig, "val_groups", help="Training-list groups held out for validation.")
@setting_option(TrainConfig, "patience", help="Epochs without improvement before stopping.")
@setting_option(TrainConfig, "seed", help="Seed of the single models; the ensemble uses SEED..SEED+MEMBERS-1.")
@click.option("--members", type=int, default=3, show_default=True, help="Ensemble size.")
@user_errors
def compare(config_file, members, **flags):
    """Baseline vs + training augmentation vs + TTA vs + ensemble vs order-blind: one markdown table
    (top-1, top-5, mean class accuracy, wall time), also written to OUT/compare.md."""
    from ucfpipe.config import TrainConfig
    from ucfpipe.stage_two import compare as stage

    stage.run(load_config(TrainConfig, config_file, flags), members=members, log=click.echo)
