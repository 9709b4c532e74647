"""The `ucfpipe` command: one thin click command per stage. Stages raise UcfpipeError; only this module
turns errors into exit statuses (2 for user errors, as click does for usage errors)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from . import interrupts, quiet

if __name__ == "__main__" or Path(sys.argv[0]).name == "ucfpipe":
    # This process is the ucfpipe command: a Ctrl-C during the imports below is noted, and `_Main.main`
    # (which installs the raising handler) reports it; TensorFlow's start-up lines are filtered out.
    interrupts.record_only()
    quiet.install()

import click  # noqa: E402

# TensorFlow's C++ logging below errors (other backends ignore this variable); what it prints before its
# logging starts is filtered by `quiet`.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import __version__  # noqa: E402
from .backbones import BACKBONES  # noqa: E402
from .comma_list import comma_list  # noqa: E402
from .config import CHOICES, PRECISIONS, ExtractConfig, FinetuneConfig, TrainConfig, load_config, setting  # noqa: E402
from .errors import UcfpipeError  # noqa: E402

EXIT_INTERRUPTED = 130  # documented: as a shell reports a process ended by SIGINT (143 for SIGTERM, see interrupts)


def user_errors(command):
    """Library errors and OS errors (missing permissions, full disk) -> one line on stderr, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            result = command(*args, **kwargs)
            interrupts.check()  # Ctrl-C swallowed somewhere (a gc callback) is still an interrupt
            return result
        except KeyboardInterrupt:
            # Before a stage reached a safe point (importing TensorFlow, building the model): nothing of this
            # run was kept that a rerun would not redo or skip.
            raise _interrupted("interrupted; rerun the same command to continue") from None
        except UcfpipeError as err:
            exc = click.ClickException(str(err))
            exc.exit_code = err.exit_code
            raise exc from None
        except OSError as err:
            where = f"{err.filename}: " if err.filename else ""
            exc = click.ClickException(f"{where}{err.strerror or err}; check the path, its permissions and free disk space")
            exc.exit_code = 2
            raise exc from None

    return wrapper


def _interrupted(message: str) -> click.ClickException:
    exc = click.ClickException(message)
    exc.exit_code = EXIT_INTERRUPTED
    return exc


class _Main(click.Group):
    """The group with Ctrl-C handled end to end: click alone prints "Aborted!" and exits 1 for an interrupt
    outside a command, and a KeyboardInterrupt swallowed by a gc callback would let a run go on."""

    ALIASES = {"bench": "bench-extract"}  # its name before the other bench-* commands came

    def get_command(self, ctx, name):
        return super().get_command(ctx, self.ALIASES.get(name, name))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        previous = interrupts.install()
        try:
            if not standalone_mode:
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            try:
                interrupts.check()  # pressed while this module imported
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
                interrupts.check()
            except (KeyboardInterrupt, click.exceptions.Abort):
                interrupts.ignore()
                interrupts.forget_escaped()
                _interrupted("interrupted; rerun the same command to continue").show()
                sys.exit(interrupts.exit_status())
            except click.ClickException as err:
                if err.exit_code == EXIT_INTERRUPTED:
                    # Stages say "interrupted" with 130; SIGTERM took the same way and ends with 143.
                    interrupts.ignore()
                    interrupts.forget_escaped()
                    err.exit_code = interrupts.exit_status()
                err.show()
                sys.exit(err.exit_code)
            sys.exit(result if isinstance(result, int) else 0)
        finally:
            interrupts.restore(previous)


def config_option(stage: str):
    default = Path("stages") / f"{stage}.toml"
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help=f"TOML file of {stage} settings (the Makefile passes {default}); flags override it.",
    )


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ucfpipe")
def main():
    """UCF-101 videos -> VGG16 features (stage one) -> LSTM classifier (stage two)."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", "num_classes", type=int, default=6, show_default=True, help="Number of classes (even: they come in time-reversed pairs).")
@click.option("--groups", "num_groups", type=int, default=6, show_default=True, help="Groups gGG per class (split s tests on the s-th third).")
@click.option("--clips-per-group", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--replace", is_flag=True, help="Delete OUT/UCF-101 and OUT/ucfTrainTestlist first (a non-empty OUT is refused without it).")
@user_errors
def synth(out, num_classes, num_groups, clips_per_group, seed, replace):
    """Generate a small synthetic dataset in UCF-101's layout (OUT/UCF-101, OUT/ucfTrainTestlist)
    whose classes differ only in temporal order. A non-empty OUT is refused unless --replace."""
    from .synth import generate_dataset

    try:
        summary = generate_dataset(out, num_classes=num_classes, num_groups=num_groups,
                                   clips_per_group=clips_per_group, seed=seed, replace=replace)
    except ValueError as err:
        raise UcfpipeError(str(err)) from None
    click.echo(f"wrote {summary['num_clips']} clips of {len(summary['classes'])} classes: "
               f"--videos {summary['videos']} --splits {summary['splits']}")


# -- settings: type, choices and documented default of each flag come from config.py -------------------------
def setting_option(cls, name: str, *decls: str, help: str, default_help: str = "", choice: bool = True, **kwargs):
    """The flag of setting `name` of `cls`: its type and choices from config.py, `[default: ...]` from the
    dataclass (or `default_help` where the default is worked out, as a backbone's layer). It defaults to None
    ("not given"): load_config then keeps a config file's value, so defaults < file < flags holds.

    `choice=False` lists the choices in the help (`{choices}`) and leaves refusing others to the library, whose
    message is the same for a flag and a config file's key."""
    default, hint = setting(cls, name)
    decls = decls or (f"--{name.replace('_', '-')}",)
    shown = default_help or _shown_default(default, decls)
    if name in CHOICES:
        if choice:
            kwargs["type"] = click.Choice(CHOICES[name])
        else:
            help = help.format(choices=", ".join(CHOICES[name]))
    elif hint is bool:
        kwargs["is_flag"] = True
    elif "type" not in kwargs:
        kwargs["type"] = hint
    return click.option(*decls, name, default=None, help=help + (f"  [default: {shown}]" if shown else ""), **kwargs)


def _shown_default(value, decls) -> str:
    """The dataclass default as the help shows it; "" (required, or worked out later) shows nothing, and a
    plain flag is off unless given. A --yes/--no pair names its default side."""
    if isinstance(value, bool):
        pair = decls[0].split("/")
        return pair[0 if value else 1].lstrip("-") if len(pair) == 2 else ""
    if isinstance(value, float):
        mantissa, exponent, power = repr(value).partition("e")
        return f"{mantissa}e{int(power)}" if exponent else mantissa  # 1e-5 (not 1e-05), as the TOML files write it
    return str(value)


DEFAULT_BACKBONE = BACKBONES[ExtractConfig.backbone]  # its layers are named where a setting's default is "the backbone's"
DATASET_HELP = "How --splits and --videos are laid out: {choices} (see README, Datasets)."


def dataset_option():
    """--dataset of the commands that read no config file (splits, check): extract's default, given directly."""
    return click.option("--dataset", default=ExtractConfig.dataset, show_default=True, metavar="NAME",
                        help=DATASET_HELP.format(choices=", ".join(CHOICES["dataset"])))


@main.group(invoke_without_command=True)
@click.option("--splits", "splits_dir", type=click.Path(), help="The dataset's split files (ucfTrainTestlist/ for ucf101).")
@click.option("--videos", "videos_dir", type=click.Path(), default=None, help="Also report listed clips missing under this video root.")
@dataset_option()
@click.pass_context
@user_errors
def splits(ctx, splits_dir, videos_dir, dataset):
    """Check a dataset's split files and print each split's clip, class and group (or source) counts.

    `ucfpipe splits make` writes split lists for your own videos."""
    from . import datasets

    if ctx.invoked_subcommand is not None:
        return
    if splits_dir is None:
        raise UcfpipeError("--splits is required: the folder of the dataset's split files (or run `ucfpipe splits make`)")
    # Reading a split refuses one whose train and test share a clip or group: what is printed never leaks.
    all_splits = datasets.read_all_splits(dataset, splits_dir)
    kind = datasets.group_word(all_splits[0])
    click.echo(f"{'split':<6}{'train':>7}{'test':>7}{'classes':>9}  train {kind} / test {kind}")
    for split in all_splits:
        click.echo(f"{split.number:<6}{len(split.train):>7}{len(split.test):>7}{len(split.classes):>9}  "
                   f"{datasets.describe_groups(split, 'train')} / {datasets.describe_groups(split, 'test')}  "
                   + ("(no group shared)" if split.holdout != "stratified" else "(no clip shared)"))
    clips = datasets.all_clips(dataset, splits_dir)
    click.echo(f"{len(clips)} distinct clips in {len(all_splits[0].classes)} classes ({dataset}); `train` validates on "
               f"{datasets.describe_holdout(all_splits[0])}")
    if videos_dir is not None:
        missing = datasets.missing_on_disk(clips, videos_dir)
        click.echo(f"{len(clips) - len(missing)} of {len(clips)} listed clips are under {videos_dir}; {len(missing)} missing")
        for clip in missing[:10]:
            click.echo(f"  missing: {clip.relative_path}")
        if len(missing) > 10:
            click.echo(f"  ... and {len(missing) - 10} more")


@splits.command("make")
@click.option("--videos", "videos_dir", required=True, type=click.Path(), help="Your videos: <class>/<name>.<avi|mp4|mov|mkv|webm>.")
@click.option("--out", required=True, type=click.Path(), help="New folder for classInd.txt, trainlist0N.txt, testlist0N.txt.")
@click.option("--folds", type=int, default=1, show_default=True, help="Folds (splits) 1-3, with disjoint test parts.")
@click.option("--test-fraction", type=float, default=0.3, show_default=True, help="Share of each class (or of the groups) tested on.")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def splits_make(videos_dir, out, folds, test_fraction, seed):
    """Write split lists in UCF-101's format for a folder of your own videos (then use --dataset folders).

    A file whose name carries a group (`_gNN_`, as UCF-101's) goes to one side with its whole group; files
    without one are each their own group, split stratified by class. Videos in subfolders of a class folder
    belong to that class. Names may hold spaces. Classes with too few videos are refused and nothing is written."""
    from .datasets import folders

    plan = folders.make_lists(videos_dir, out, folds, test_fraction, seed)
    for number, (train, test) in enumerate(plan["folds"], 1):
        click.echo(f"fold {number}: {len(train)} train, {len(test)} test clips")
    how = {"groups": f"by groups: each _gNN_ group of the {plan['grouped']} videos on one side",
           "stratified": f"stratified by class: no file name has a _gNN_ group, so each of the {plan['single']} "
                         "videos is a group of its own",
           "mixed": f"{plan['grouped']} videos by their _gNN_ groups (each group on one side); the {plan['single']} "
                    "without a group each a group of its own, stratified by class"}[plan["mode"]]
    nested = (f"; {plan['nested']} video{'s' if plan['nested'] != 1 else ''} in subfolders of a class folder "
              "taken as that class (clip ids keep the subfolder)" if plan["nested"] else "")
    click.echo(f"wrote {out}: {len(plan['classes'])} classes, {len(plan['folds'])} fold(s), {how}{nested}; "
               f"use --dataset folders --splits {out} --videos {videos_dir}")


@main.command()
@config_option("extract")
@setting_option(ExtractConfig, "videos", type=click.Path(), help="The UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi.")
@setting_option(ExtractConfig, "splits", type=click.Path(), help="The ucfTrainTestlist/ folder; every clip it lists is extracted once.")
@setting_option(ExtractConfig, "dataset", metavar="NAME", choice=False, help=DATASET_HELP)
@setting_option(ExtractConfig, "out", type=click.Path(), help="Feature cache directory.")
@setting_option(ExtractConfig, "frames", help="T, frames sampled uniformly over each whole clip.")
@setting_option(ExtractConfig, "size", help="Frames are resized to SIZE x SIZE.")
@setting_option(ExtractConfig, "backbone", metavar="NAME", choice=False, help="Image model: {choices} (see README).")
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
@setting_option(ExtractConfig, "views", help="Views stored per clip, e.g. flip,crops,time or all (see README).")
@setting_option(ExtractConfig, "shard", help="i/N: only the i-th (0-based) of N disjoint parts of the clip list; join them with `ucfpipe merge`.")
@setting_option(ExtractConfig, "allow_missing", help="Extract what is on disk when listed clips are missing.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@user_errors
def extract(config_file, no_progress, **flags):
    """Stage one: backbone (VGG16 by default) features of T uniformly sampled frames of every listed clip, into a resumable cache.

    Exit status 0 when every clip on disk was extracted, 3 when some clips could not be read (listed in
    the cache's manifest and retried by the next run), 2 for bad input, 130 when interrupted."""
    from . import extract as stage

    config = load_config(ExtractConfig, config_file, flags)
    summary = stage.run(config, progress=not no_progress and sys.stderr.isatty())
    if summary["failed"]:
        exc = click.ClickException(
            f"{len(summary['failed'])} clips could not be read (see 'report' in {Path(config.out) / 'manifest.json'}); "
            "fix or remove them and rerun to retry"
        )
        exc.exit_code = stage.EXIT_CLIPS_FAILED
        raise exc


# -- checks and scale-out -----------------------------------------------------------------------------------
@main.command()
@click.option("--videos", type=click.Path(), help="The video root (with --features: report clips whose video changed).")
@click.option("--splits", type=click.Path(), help="The folder of the dataset's split files.")
@dataset_option()
@click.option("--features", type=click.Path(), help="Verify this feature cache instead: every shard's SHA-256, and with --videos changed videos.")
@click.option("--frames", type=int, default=ExtractConfig.frames, show_default=True, help="T you will extract with: shorter clips are reported.")
@click.option("--workers", type=int, default=ExtractConfig.workers, show_default=True, help="Decoding threads.")
@click.option("--errors-only", is_flag=True, help="Hide warnings (short clips, misreported frame counts).")
@user_errors
def check(videos, splits, dataset, features, frames, workers, errors_only):
    """Scan the listed clips (decoding only, no CNN) and report each bad one; or, with --features, verify
    a feature cache.

    Exit status 0 when every clip is usable, 3 when some are not (missing, empty, not a video, unreadable,
    no decodable frames). Warnings (fewer frames than T, a misreported frame count) are handled by extract.
    With --features: 0 when every shard is whole (and, with --videos, no video changed), 3 otherwise."""
    from . import check as stage
    from .datasets import get

    get(dataset)  # an unknown name fails before any work
    if features is not None:
        return _check_features(stage, features, videos)
    if videos is None or splits is None:
        raise UcfpipeError("check needs --videos and --splits (to scan the clips), or --features DIR (to verify a cache)")
    checked, problems = stage.run(videos, splits, frames, workers, progress=sys.stderr.isatty(), dataset=dataset)
    shown = [p for p in problems if p.is_error or not errors_only]
    for problem in shown[:200]:
        click.echo(f"{'error' if problem.is_error else 'warning'}: {problem.video_id}: {problem.kind}: {problem.detail}")
    if len(shown) > 200:
        click.echo(f"... and {len(shown) - 200} more")
    counts: dict[str, int] = {}
    for problem in problems:
        counts[problem.kind] = counts.get(problem.kind, 0) + 1
    errors = sum(p.is_error for p in problems)
    click.echo(f"checked {checked} clips: {errors} unusable, {len(problems) - errors} warnings"
               + "".join(f"; {kind}: {n}" for kind, n in sorted(counts.items())))
    if errors:
        missing = counts.get("missing", 0)
        advice = []
        if errors > missing:
            advice.append(f"extract skips the {errors - missing} unreadable ones, lists them under 'failed' in the "
                          "manifest, exits 3 and retries them on the next run")
        if missing:
            advice.append(f"the {missing} missing ones stop extract unless you pass --allow-missing")
        exc = click.ClickException(f"{errors} of {checked} listed clips are unusable; fix or remove them, or know that "
                                   + "; ".join(advice))
        exc.exit_code = 3
        raise exc


def _check_features(stage, features, videos):
    report = stage.check_features(features, videos)
    for name, problem in sorted(report.damaged.items()):
        click.echo(f"{'missing' if problem == 'missing' else 'damaged'}: {name}: {problem}")
    for video_id, how in sorted(report.changed.items())[:200]:
        click.echo(f"changed: {video_id}: {how}")
    if len(report.changed) > 200:
        click.echo(f"... and {len(report.changed) - 200} more changed clips")
    for video_id, path in sorted(report.deleted.items())[:200]:
        click.echo(f"deleted: {video_id}: no video at {path}")
    if len(report.deleted) > 200:
        click.echo(f"... and {len(report.deleted) - 200} more deleted videos")
    speed = report.hashed_bytes / 1e6 / max(report.seconds, 1e-9)
    how = (f"SHA-256 of {report.hashed_bytes / 1e6:.1f} MB in {report.seconds:.1f} s ({speed:.0f} MB/s)"
           if report.checksummed else f"format {report.format} has no checksums: only read through, "
           "which finds unreadable shards but not changed numbers; extract into a new directory to get checksums")
    click.echo(f"checked {report.shards} shards of {report.clips} clips in {report.directory}: {len(report.damaged)} "
               f"damaged or missing, {len(report.changed)} clips changed, {len(report.deleted)} videos deleted"
               + ("" if videos else " (pass --videos to look)")
               + f"; {how}")
    if report.damaged or report.changed:
        exc = click.ClickException(
            f"{report.directory} is not whole: rerun the extract command that made it; it moves damaged shards to "
            f"{report.directory}/damaged/ and extracts their clips, and those of changed videos, again")
        exc.exit_code = 3
        raise exc
    if report.deleted:
        # Extract cannot redo a clip without its video: the cache still holds what the old file gave.
        exc = click.ClickException(
            f"{len(report.deleted)} cached clips have no video under {videos} any more (e.g. {min(report.deleted)}); "
            "restore the videos, or extract the remaining ones into a new cache if they were removed on purpose")
        exc.exit_code = 3
        raise exc


@main.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The merged cache directory (must not exist).")
@user_errors
def merge(parts, out):
    """Join the caches of `extract --shard i/N` runs into one, verifying every clip is there exactly once."""
    from .merge import merge as merge_parts

    summary = merge_parts(list(parts), out)
    click.echo(f"merged {summary['parts']} parts: {summary['clips']} clips in {summary['out']} "
               f"({summary['missing']} missing on disk, {summary['failed']} unreadable)")


@main.command("bench-extract")
@click.option("--clips", "clip_counts", default="16,32", show_default=True, help="Clip counts (multiples of 8); all modes run on the largest.")
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--size", type=int, default=64, show_default=True)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--weights", default="none", show_default=True, help="none, imagenet or a weights file.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=ExtractConfig.precision, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@user_errors
def bench_extract(clip_counts, frames, size, batch_size, workers, weights, precision, json_out):
    """Stage one side by side: model-only, ucfpipe's extraction, a naive tutorial-style peer, decoding alone
    (also `ucfpipe bench`)."""
    from . import bench_extract as bench
    from .features import write_json_atomic

    counts = comma_list(clip_counts, "--clips", int, positive=True)
    results = bench.run(counts, frames, size, batch_size, workers, weights, precision, log=click.echo)
    click.echo(bench.format_table(results))
    if json_out:
        write_json_atomic(Path(json_out), results)


@main.command("bench-model")
@click.option("--batch-sizes", default="32,64", show_default=True, help="Comma-separated frames per model call.")
@click.option("--precisions", default="float32,bfloat16", show_default=True, help=f"Compute dtypes: {', '.join(PRECISIONS)}.")
@click.option("--backbone", "backbone_names", default=ExtractConfig.backbone, show_default=True,
              help=f"Comma-separated backbones timed side by side ({', '.join(BACKBONES)}) or all.")
@click.option("--size", type=int, help="Frame size.  [default: each backbone's native size]")
@click.option("--weights", default="none", show_default=True, help="none, imagenet or a weights file.")
@click.option("--videos", type=click.Path(), help="Clips (<Class>/*.avi) to take the compared frames from.  [default: generated]")
@click.option("--effect-frames", type=int, default=64, show_default=True, help="Frames the precisions are compared on.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved timing rounds (the median is kept).")
@click.option("--seconds", "min_seconds", type=float, default=2.0, show_default=True, help="Per setting and round.")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@user_errors
def bench_model(batch_sizes, precisions, backbone_names, size, weights, videos, effect_frames, rounds, min_seconds, json_out):
    """The backbones alone, side by side, by precision and batch size (frames/s, feature size), and how far each
    precision's features are from float32's."""
    from . import bench_model as bench
    from .features import write_json_atomic

    sizes = comma_list(batch_sizes, "--batch-sizes", int, positive=True, repeats="drop")  # each once, in the order given
    chosen = comma_list(precisions, "--precisions", choices=PRECISIONS, repeats="drop")
    names = tuple(BACKBONES) if backbone_names.strip() == "all" else comma_list(backbone_names, "--backbone", repeats="drop")
    if min(effect_frames, rounds) < 1:
        raise UcfpipeError("--effect-frames and --rounds must be at least 1")
    results = bench.run(sizes, chosen, size, weights, videos, effect_frames, rounds, min_seconds, log=click.echo,
                        backbones=names)
    click.echo(bench.format_table(results))
    if json_out:
        write_json_atomic(Path(json_out), results)


@main.command()
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
    from . import finetune as stage

    stage.run(config, log=click.echo)


# -- stage two ------------------------------------------------------------------------------------------------
@main.command()
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
                "groups: about this many clips per class; README, Datasets).")
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
    from . import train as stage
    from .config import TrainConfig

    if seeds or cells:
        from . import ensemble

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


@main.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory made by `ucfpipe train`.")
@click.option("--features", type=click.Path(), help="Feature cache, if not where the run found it (same fingerprint).")
@click.option("--splits", "--split-dir", "splits", type=click.Path(), help="The ucfTrainTestlist/ folder, if not the run's.")
@click.option("--allow-missing", is_flag=True, default=None, help="Score the test clips present when the cache lacks some.")
@click.option("--baseline", is_flag=True, help="Also score an order-blind reference (logistic regression on time-averaged features).")
@click.option("--tta", is_flag=True, help="Also score probabilities averaged over every stored view of each clip (metrics.json: tta).")
@user_errors
def eval_command(run_dir, features, splits, allow_missing, baseline, tta):
    """Score a run's best model (or an ensemble's mean) on its split's test list: metrics.json, per_class.csv, confusion.png."""
    from . import evaluate

    evaluate.run(run_dir, features=features, splits=splits, allow_missing=allow_missing, baseline=baseline, tta=tta,
                 log=click.echo)


@main.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run (or ensemble) directory made by `ucfpipe train`.")
@click.option("--top", type=int, default=5, show_default=True, help="Classes to show per video.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list, one entry per video).")
@click.option("--weights", type=click.Path(), help="The VGG16 weights file, if it moved since extraction (its SHA-256 is checked).")
@click.option("--window", help="Sliding windows of this many seconds over each whole video; auto: the run's typical clip duration.")
@click.option("--stride", type=float, help="Seconds between window starts (implies windows).  [default: half the window]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Windows: write OUT/<video>/windows.csv, seconds.csv, timeline.png.")
@user_errors
def predict(videos, run_dir, top, as_json, weights, window, stride, out_dir):
    """Classify video files with a trained run (decoded, sampled and featurised exactly as its cache was).
    A directory stands for every video under it (.avi, .mp4, .mov, .mkv, .webm; recursively, sorted).

    With --window/--stride/--out, classify sliding windows over each whole video (see README, "Long videos").
    Exit status 2 when a file cannot be read; with several files, the others are still classified."""
    import json

    from . import ensemble, windows
    from . import predict as stage

    # Every setting that needs no model is checked before Keras loads (10-30 s): a typo is refused at once.
    if top < 1:
        raise UcfpipeError(f"--top must be at least 1, got {top}")
    windowed = window is not None or stride is not None or out_dir is not None
    seconds = None
    if window not in (None, "auto"):
        try:
            seconds = float(window)
        except ValueError:
            raise UcfpipeError(f"--window must be a number of seconds or auto, got {window!r}") from None
        windows.check_seconds(seconds, "--window", "auto")
    if stride is not None and seconds is not None:
        windows.check_window(seconds, stride)
    elif stride is not None:
        windows.check_seconds(stride, "--stride", "1")  # against the run's window once its record is read
    videos = _video_files(videos)
    if out_dir is not None:
        _check_out(Path(out_dir), videos)
    members = ensemble.load_run_or_ensemble(run_dir)
    try:
        if windowed:
            return _predict_windows(videos, run_dir, members[0], top, as_json, weights, seconds, stride, out_dir)
        predictions = stage.run(videos, run_dir, top=top, weights=weights)
    except KeyboardInterrupt:
        # Predict keeps nothing between runs: "rerun to continue" (extract's, train's) would promise a resume.
        written = "; the --out folders written so far are whole" if out_dir is not None else ""
        raise _interrupted("interrupted; a rerun of the same command classifies every video again from the start"
                           f"{written}") from None
    failed = [p for p in predictions if p.error is not None]
    if len(predictions) == 1 and failed:
        raise UcfpipeError(failed[0].error)
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in predictions], indent=2))
    else:
        for prediction in predictions:
            if prediction.error is None:
                click.echo(prediction.video)
                width = max(len(name) for name, _ in prediction.top)
                for rank, (name, probability) in enumerate(prediction.top, 1):
                    click.echo(f"  {rank}. {name:<{width}}  {probability:.4f}")
    for prediction in failed:
        click.echo(f"error: {prediction.error}", err=True)
    if failed:
        raise UcfpipeError(f"{len(failed)} of {len(predictions)} videos could not be read")


def _video_files(paths) -> list[str]:
    """Files as given; a directory stands for every video under it (by extension, recursively, sorted). A path
    that does not exist is a typo, refused before anything loads; a file that cannot be decoded is reported
    per file once the model is there."""
    from .video import VIDEO_EXTENSIONS

    missing = [str(path) for path in paths if not os.path.lexists(path)]
    if missing:
        raise UcfpipeError(f"{len(missing)} of {len(paths)} videos do not exist ({', '.join(missing[:3])}"
                           f"{', ...' if len(missing) > 3 else ''}); check the paths")
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(str(path))
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
        if not found:
            raise UcfpipeError(f"{path} is a directory with no video files under it ({', '.join(VIDEO_EXTENSIONS)}); "
                               "pass video files or a folder that holds some")
        files += map(str, found)
    return files


def _check_out(out: Path, videos: list[str]) -> None:
    """--out gets one folder per video, named by its file name: two videos of one name, or a file where a
    folder must go, would fail only after every video was classified."""
    seen: dict[str, str] = {}
    for video in videos:
        stem = Path(video).stem
        if stem in seen:
            raise UcfpipeError(f"--out writes each video's results to OUT/<file name>/, and {seen[stem]} and {video} would "
                               f"both write {out / stem}; predict them in separate runs with different --out folders")
        seen[stem] = video
        if (out / stem).exists() and not (out / stem).is_dir():
            raise UcfpipeError(f"{out / stem} is a file, where --out would write {video}'s results; "
                               "move it or pick another --out")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UcfpipeError(f"--out {out}: {parent} is a file, not a folder; pick another --out")


def _predict_windows(videos, run_dir, run, top, as_json, weights, seconds, stride, out_dir):
    import json

    from . import windows
    from .predict import Predictor

    rate = windows.recorded_rate(run, seconds)  # the run's record, without Keras
    stride = stride if stride is not None else rate.clip_seconds / 2
    windows.check_videos(videos, rate, stride)
    predictor = Predictor(run_dir, weights)
    predictions = windows.run(videos, predictor, rate, stride, progress=sys.stderr.isatty())
    done = [p for p in predictions if p.error is None]
    if out_dir:
        for prediction in done:
            windows.write_outputs(prediction, Path(out_dir) / Path(prediction.video).stem, top)
    if as_json:
        click.echo(json.dumps([p.as_dict(top) for p in predictions], indent=2))
    else:
        for prediction in done:
            click.echo(f"{prediction.video}: {prediction.duration:.1f} s, {len(prediction.windows)} windows of "
                       f"{rate.clip_seconds:.2f} s")
            for start, end, name in prediction.segments():
                click.echo(f"  {start:8.1f} - {end:8.1f} s  {name}")
            if out_dir:
                click.echo(f"  -> {Path(out_dir) / Path(prediction.video).stem}/windows.csv, seconds.csv, timeline.png")
    failed = [p for p in predictions if p.error is not None]
    for prediction in failed:
        click.echo(f"error: {prediction.error}", err=True)
    if failed:
        raise UcfpipeError(failed[0].error if len(predictions) == 1 else f"{len(failed)} of {len(predictions)} videos could not be read")


LIVE_EXIT = {"end": 0, "quit": 0, "dropped": 4, "stalled": 4}  # interrupted: interrupts.exit_status(), 130 or 143


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run (or ensemble) directory made by `ucfpipe train`.")
@click.option("--source", required=True, help="Camera index (0), stream URL (rtsp://, http://...), video file or file:// URL.")
@click.option("--window", type=float, help="Seconds the run sees at once (T sampled frames).  [default: the run's typical clip]")
@click.option("--stride", type=float, help="Seconds between predictions, at most the window.  [default: half the window]")
@click.option("--top", type=int, default=5, show_default=True, help="Classes per prediction.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per prediction and line: time, latency, top.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Also write the video with the top-3 drawn on it (.mp4 or .avi).")
@click.option("--display", is_flag=True, help="Show the annotated video in a window (needs OpenCV with GUI support); q quits.")
@click.option("--realtime", is_flag=True, help="Play a file source at its own speed instead of as fast as it decodes.")
@click.option("--stall", "stall_seconds", type=float, default=10.0, show_default=True,
              help="Stop when no frame arrives (or a URL does not answer) for this many seconds, at most 86400.")
@click.option("--weights", type=click.Path(), help="The VGG16 weights file, if it moved since extraction (its SHA-256 is checked).")
@user_errors
def live(run_dir, source, window, stride, top, as_json, out_path, display, realtime, stall_seconds, weights):
    """Classify a camera, stream or file as its frames arrive: the top classes every --stride seconds.

    Exit status 0 at the end of a file source, 2 for bad input (a source that cannot be opened, a full disk
    under --out), 4 when a camera or stream drops or stalls, 130 on Ctrl-C and 143 on SIGTERM (the recording
    so far kept whole); a summary line on stderr in every case but bad input."""
    import json

    from . import live as stage
    from . import windows
    from .predict import Predictor
    from .stream import StreamingFeaturiser, run_rate

    if top < 1:
        raise UcfpipeError(f"--top must be at least 1, got {top}")
    stage.check_settings(stride, stall_seconds)
    if window is not None:
        windows.check_window(window, stride if stride is not None else window / 2)
    if display:
        stage.check_display()
    writer = stage.AnnotatedWriter(out_path, 0.0) if out_path else None
    frames = stage.open_source(source, realtime, stall_seconds)
    try:
        predictor = Predictor(run_dir, weights)
    except KeyboardInterrupt:
        click.echo("live: interrupted before the first frame", err=True)
        sys.exit(interrupts.exit_status())
    rate = run_rate(predictor, window)
    stride = stride if stride is not None else rate.clip_seconds / 2
    windows.check_window(rate.clip_seconds, stride)  # predict's refusal of a stride longer than the window
    if frames.fps > 0:  # the same refusal as predict --window: fewer frames than T would repeat frames
        windows.layout(rate, rate.clip_seconds, frames.fps, where=f"{source}: ")
    if writer is not None:
        writer.fps = frames.fps if frames.fps > 0 else writer.fps

    def emit(prediction):
        if as_json:
            click.echo(json.dumps(prediction.as_dict()))
        else:
            classes = "  ".join(f"{name} {p:.3f}" for name, p in prediction.top)
            click.echo(f"{prediction.time:9.2f} s  latency {prediction.latency * 1000:6.0f} ms  {classes}")

    summary = stage.run(StreamingFeaturiser(predictor), frames, rate, stride, top=top, emit=emit, out=writer,
                        display=display, stall_seconds=stall_seconds, name=source)
    if summary.ended == "interrupted":
        interrupts.ignore()  # a second signal must not cut the summary short
    click.echo(summary.line(), err=True)
    if writer is not None and summary.frames:
        click.echo(f"wrote {out_path}", err=True)
    sys.exit(interrupts.exit_status() if summary.ended == "interrupted" else LIVE_EXIT[summary.ended])


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a markdown table (figures x splits), as pasted in the README.")
@click.option("--require-margin", type=float, metavar="M",
              help="Exit 3 unless every run's LSTM top-1 beats its order-blind top-1 (eval --baseline) by at least M.")
@user_errors
def report(run_dirs, as_markdown, require_margin):
    """Each evaluated run's split, top-1, top-5 and mean class accuracy, then mean ± std over the runs.

    Runs of different datasets are refused; notes (and the --require-margin line) go to stderr."""
    from . import report as stage

    stage.run(run_dirs, log=click.echo, as_markdown=as_markdown, require_margin=require_margin,
              warn=lambda line: click.echo(line, err=True))


@main.command("bench-long")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory to predict with (e.g. demo/runs/split1).")
@click.option("--minutes", default="1,10,30", show_default=True, help="Video lengths, comma-separated.")
@click.option("--size", type=int, default=64, show_default=True, help="Frame width and height of the generated videos.")
@click.option("--fps", type=float, default=25.0, show_default=True)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default="bench-long", show_default=True,
              help="Where the generated videos are kept (written once, reused).")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@user_errors
def bench_long(run_dir, minutes, size, fps, directory, json_out):
    """Windowed prediction on generated long videos, each length in its own process: frames/s and peak RSS."""
    from . import bench_long as bench
    from .features import write_json_atomic

    lengths = comma_list(minutes, "--minutes", float)
    if min(lengths) <= 0 or size < 16 or fps <= 0:
        raise UcfpipeError("--minutes and --fps must be positive, --size at least 16")
    results = bench.run(run_dir, lengths, size, fps, directory, log=click.echo)
    click.echo(bench.format_table(results))
    if json_out:
        write_json_atomic(Path(json_out), results)


@main.command("bench-train")
@config_option("train")
@click.option("--clips", type=int, default=9537, show_default=True, help="Training clips (split 1 has 9,537).")
@click.option("--frames", type=int, default=40, show_default=True, help="T, steps per clip.")
@click.option("--dim", type=int, default=512, show_default=True, help="Features per step.")
@click.option("--classes", "num_classes", type=int, default=101, show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True, help="The first includes compilation; at least 2.")
@setting_option(TrainConfig, "batch_size", help="Clips per step (as train's, from --config or the flag).")
@setting_option(TrainConfig, "units", help="Units per recurrent layer.")
@setting_option(TrainConfig, "cell", help="Recurrent cell.")
@setting_option(TrainConfig, "distribute", help="data: over every device (JAX).")
@user_errors
def bench_train(config_file, clips, frames, dim, num_classes, epochs, **flags):
    """Time training epochs of the train config's model on random features of the given shape, in memory."""
    from . import bench_train as bench
    from .config import TrainConfig

    # The benchmark reads no data: placeholder paths only satisfy the config's validation.
    config = load_config(TrainConfig, config_file, {**flags, "features": "-", "splits": "-", "out": "-"})
    try:
        bench.run(config, clips=clips, frames=frames, dim=dim, num_classes=num_classes, epochs=epochs, log=click.echo)
    except ValueError as err:
        raise UcfpipeError(str(err)) from None


@main.command()
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
    from . import compare as stage
    from .config import TrainConfig

    stage.run(load_config(TrainConfig, config_file, flags), members=members, log=click.echo)


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run (or ensemble) directory made by `ucfpipe train`.")
@click.option("--out", required=True, type=click.Path(), help="New (or empty) directory for the model and the files beside it.")
@click.option("--format", "model_format", type=click.Choice(["keras", "saved_model", "onnx"]), default="keras", show_default=True,
              help="keras: model.keras (any backend); saved_model and onnx need TensorFlow, onnx also the extra ucfpipe[onnx].")
@click.option("--weights", type=click.Path(), help="The VGG16 weights file, if it moved since extraction (its SHA-256 is checked).")
@user_errors
def export(run_dir, out, model_format, weights):
    """One deployable model: uint8 RGB frames (N, T, S, S, 3) in, class probabilities out (CNN, its
    preprocessing and the run's sequence model in one), with the classes and the sampling rule beside it."""
    from . import export as stage

    stage.run(run_dir, out, model_format, weights=weights, log=click.echo)


if __name__ == "__main__":
    main()
