"""Data commands: synth (a generated dataset), splits (read or make split lists), check (videos or a feature
cache), merge (parts of a cache extracted as job-array tasks)."""

from __future__ import annotations

import re

import click

from ucfpipe.commands.options import dataset_option, incomplete, no_progress_option, user_errors
from ucfpipe.config import ExtractConfig
from ucfpipe.core.errors import UcfpipeError


SYNTH_FLAGS = {"num_classes": "--classes", "num_groups": "--groups", "clips_per_group": "--clips-per-group", "seed": "--seed"}


@click.command()
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
    from ucfpipe.datasets.synth import generate_dataset

    try:
        summary = generate_dataset(out, num_classes=num_classes, num_groups=num_groups,
                                   clips_per_group=clips_per_group, seed=seed, replace=replace)
    except ValueError as err:  # generate_dataset names its parameters; the user typed these flags
        raise UcfpipeError(re.sub(r"\b(num_classes|num_groups|clips_per_group|seed)\b",
                                  lambda name: SYNTH_FLAGS[name.group()], str(err))) from None
    click.echo(f"wrote {summary['num_clips']} clips of {len(summary['classes'])} classes: "
               f"--videos {summary['videos']} --splits {summary['splits']}")


@click.group(invoke_without_command=True)
@click.option("--splits", "splits_dir", type=click.Path(), help="The dataset's split files (ucfTrainTestlist/ for ucf101).")
@click.option("--videos", "videos_dir", type=click.Path(), default=None, help="Also report listed clips missing under this video root.")
@dataset_option()
@click.pass_context
@user_errors
def splits(ctx, splits_dir, videos_dir, dataset):
    """Check a dataset's split files and print each split's clip, class and group (or source) counts; with
    --videos, also the listed clips missing there (the download check).

    Exit status 0 when the lists hold (and, with --videos, every listed clip is there), 3 when listed clips are
    missing under --videos. `ucfpipe splits make` writes split lists for your own videos."""
    from ucfpipe import datasets

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
        if missing:
            raise incomplete(
                f"{len(missing)} of {len(clips)} listed clips are missing under {videos_dir}: finish the download (or "
                "point --videos at the dataset's root), or pass --allow-missing to extract and train on the clips there")


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
    from ucfpipe.datasets import folders

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


# -- checks and scale-out -----------------------------------------------------------------------------------
@click.command()
@click.option("--videos", type=click.Path(), help="The video root (with --features: report clips whose video changed).")
@click.option("--splits", type=click.Path(), help="The folder of the dataset's split files.")
@dataset_option()
@click.option("--features", type=click.Path(), help="Verify this feature cache instead: every shard's SHA-256, and with --videos changed videos.")
@click.option("--frames", type=int, default=ExtractConfig.frames, show_default=True, help="T you will extract with: shorter clips are reported.")
@click.option("--workers", type=int, default=ExtractConfig.workers, show_default=True, help="Decoding threads.")
@click.option("--errors-only", is_flag=True, help="Hide warnings (short clips, misreported frame counts).")
@no_progress_option()
@user_errors
def check(videos, splits, dataset, features, frames, workers, errors_only, progress):
    """Scan the listed clips (decoding only, no CNN) and report each bad one; or, with --features, verify
    a feature cache.

    Exit status 0 when every clip is usable, 3 when some are not (missing, empty, not a video, unreadable,
    no decodable frames). Warnings (fewer frames than T, a misreported frame count) are handled by extract.
    With --features: 0 when every shard is whole (and, with --videos, no video changed or deleted), 3 otherwise,
    an unfinished cache (extraction interrupted) included."""
    from ucfpipe.datasets import get
    from ucfpipe.stage_one import check as stage

    get(dataset)  # an unknown name fails before any work
    if features is not None:
        return _check_features(stage, features, videos)
    if videos is None or splits is None:
        raise UcfpipeError("check needs --videos and --splits (to scan the clips), or --features DIR (to verify a cache)")
    checked, problems = stage.run(videos, splits, frames, workers, progress=progress, dataset=dataset)
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
        raise incomplete(f"{errors} of {checked} listed clips are unusable; fix or remove them, or know that "
                         + "; ".join(advice))


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
        raise incomplete(
            f"{report.directory} is not whole: rerun the extract command that made it; it moves damaged shards to "
            f"{report.directory}/damaged/ and extracts their clips, and those of changed videos, again")
    if report.deleted:
        # Extract cannot redo a clip without its video: the cache still holds what the old file gave.
        raise incomplete(
            f"{len(report.deleted)} cached clips have no video under {videos} any more (e.g. {min(report.deleted)}); "
            "restore the videos, or extract the remaining ones into a new cache if they were removed on purpose")


@click.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="The merged cache directory (must not exist).")
@user_errors
def merge(parts, out):
    """Join the caches of `extract --shard i/N` runs into one, verifying every clip is there exactly once."""
    from ucfpipe.stage_one.merge import merge as merge_parts

    summary = merge_parts(list(parts), out)
    click.echo(f"merged {summary['parts']} parts: {summary['clips']} clips in {summary['out']} "
               f"({summary['missing']} missing on disk, {summary['failed']} unreadable)")
