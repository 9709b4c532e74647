"""The `ucfpipe` command: one thin click command per stage. Stages raise UcfpipeError; only this module
turns errors into exit statuses (2 for user errors, as click does for usage errors)."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

# TensorFlow's C++ start-up chatter (oneDNN, CPU features) buries the one line a user needs; other
# backends ignore this variable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import __version__  # noqa: E402
from .config import ExtractConfig, load_config  # noqa: E402
from .errors import UcfpipeError  # noqa: E402


def user_errors(command):
    """Library errors and OS errors (missing permissions, full disk) -> one line on stderr, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
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


def config_option(stage: str):
    default = Path("stages") / f"{stage}.toml"
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False), default=None,
        help=f"TOML file of {stage} settings (the Makefile passes {default}); flags override it.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="ucfpipe")
def main():
    """UCF-101 videos -> VGG16 features (stage one) -> LSTM classifier (stage two)."""


@main.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", "num_classes", type=int, default=6, show_default=True, help="Number of classes (even: they come in time-reversed pairs).")
@click.option("--groups", "num_groups", type=int, default=6, show_default=True, help="Groups gGG per class (split s tests on the s-th third).")
@click.option("--clips-per-group", type=int, default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def synth(out, num_classes, num_groups, clips_per_group, seed):
    """Generate a small synthetic dataset in UCF-101's layout (OUT/UCF-101, OUT/ucfTrainTestlist)
    whose classes differ only in temporal order."""
    from .synth import generate_dataset

    try:
        summary = generate_dataset(out, num_classes=num_classes, num_groups=num_groups,
                                   clips_per_group=clips_per_group, seed=seed)
    except ValueError as err:
        raise UcfpipeError(str(err)) from None
    click.echo(f"wrote {summary['num_clips']} clips of {len(summary['classes'])} classes: "
               f"--videos {summary['videos']} --splits {summary['splits']}")


@main.command()
@click.option("--splits", "splits_dir", required=True, type=click.Path(), help="The ucfTrainTestlist/ folder.")
@click.option("--videos", "videos_dir", type=click.Path(), default=None, help="Also report listed clips missing under this UCF-101/ folder.")
@user_errors
def splits(splits_dir, videos_dir):
    """Check the official split lists and print each split's clip, class and group counts."""
    from . import ucf101

    all_splits = ucf101.read_all_splits(splits_dir)
    click.echo(f"{'split':<6}{'train':>7}{'test':>7}{'classes':>9}  train groups / test groups")
    for split in all_splits:
        train_groups, test_groups = sorted(split.groups("train")), sorted(split.groups("test"))
        click.echo(f"{split.number:<6}{len(split.train):>7}{len(split.test):>7}{len(split.classes):>9}  "
                   f"{_ranges(train_groups)} / {_ranges(test_groups)}  (no group shared)")
    clips = ucf101.all_clips(splits_dir)
    click.echo(f"{len(clips)} distinct clips in {len(all_splits[0].classes)} classes")
    if videos_dir is not None:
        missing = ucf101.missing_on_disk(clips, videos_dir)
        click.echo(f"{len(clips) - len(missing)} of {len(clips)} listed clips are under {videos_dir}; {len(missing)} missing")
        for clip in missing[:10]:
            click.echo(f"  missing: {clip.relative_path}")
        if len(missing) > 10:
            click.echo(f"  ... and {len(missing) - 10} more")


def _ranges(numbers: list[int]) -> str:
    """[1,2,3,5] -> 'g01-g03,g05'"""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"g{start:02d}" if start == n else f"g{start:02d}-g{n:02d}")
            start = None
    return ",".join(parts)


@main.command()
@config_option("extract")
@click.option("--videos", type=click.Path(), help="The UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi.")
@click.option("--splits", type=click.Path(), help="The ucfTrainTestlist/ folder; every clip it lists is extracted once.")
@click.option("--out", type=click.Path(), help="Feature cache directory.  [default: features/ucf101]")
@click.option("--frames", type=int, help="T, frames sampled uniformly over each whole clip.  [default: 40]")
@click.option("--size", type=int, help="Frames are resized to SIZE x SIZE.  [default: 224]")
@click.option("--weights", help="imagenet, none (random, seeded) or a path to a VGG16 weights file.  [default: imagenet]")
@click.option("--layer", help="VGG16 layer to store.  [default: block5_conv3]")
@click.option("--pooling", type=click.Choice(["avg", "max", "none"]), help="Spatial pooling; none keeps the map.  [default: avg]")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), help="Storage dtype.  [default: float16]")
@click.option("--precision", type=click.Choice(["float32", "bfloat16", "float16"]), help="VGG16 compute dtype.  [default: float32]")
@click.option("--batch-size", type=int, help="Frames per model call.  [default: 64]")
@click.option("--workers", type=int, help="Decoding threads.  [default: 2]")
@click.option("--seed", type=int, help="Seed of --weights none.  [default: 0]")
@click.option("--allow-missing", is_flag=True, default=None, help="Extract what is on disk when listed clips are missing.")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs).")
@user_errors
def extract(config_file, no_progress, **flags):
    """Stage one: VGG16 features of T uniformly sampled frames of every listed clip, into a resumable cache.

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


if __name__ == "__main__":
    main()
