"""A trained run at work: predict (files, whole or in windows), live (a camera, stream or file) and export
(one deployable model); and inspect: what a backbone's ImageNet classifier sees in stage one's frames."""

from __future__ import annotations

import sys

import click

from ucfpipe.commands.options import json_option, no_progress_option, run_option, top_option, user_errors, weights_option
from ucfpipe.core import interrupts
from ucfpipe.core.errors import EXIT_OK, EXIT_SOURCE_LOST, UcfpipeError
from ucfpipe.models.backbones import BACKBONES


@click.command()
@click.argument("videos", nargs=-1, required=True, type=click.Path())
@run_option()
@top_option()
@json_option("Print JSON (a list, one entry per video).")
@weights_option()
@click.option("--window", help="Sliding windows of this many seconds over each whole video; auto: the run's typical clip duration.")
@click.option("--stride", type=float, help="Seconds between window starts (implies windows).  [default: half the window]")
@click.option("--out", "out_dir", type=click.Path(),
              help="Windows: write OUT/<video>/windows.csv, seconds.csv, timeline.png and report.html (a page to browse).")
@no_progress_option()
@user_errors
def predict(videos, run_dir, top, as_json, weights, window, stride, out_dir, progress):
    """Classify video files with a trained run (decoded, sampled and featurised exactly as its cache was).
    A directory stands for every video under it (.avi, .mp4, .mov, .mkv, .webm; recursively, sorted).

    With --window/--stride/--out, classify sliding windows over each whole video (see docs/long-video.md).
    Exit status 2 when a file cannot be read; with several files, the others are still classified."""
    import json

    from ucfpipe.serving import predict_files

    done = predict_files.run(videos, run_dir, top=top, weights=weights, window=window, stride=stride, out_dir=out_dir,
                             progress=progress)
    predictions = done.items
    _refuse_a_single_failure(predictions)
    if as_json:
        click.echo(json.dumps([p.as_dict(top) if done.window_seconds else p.as_dict() for p in predictions], indent=2))
    elif done.window_seconds:
        _print_windows(predictions, done.window_seconds, out_dir)
    else:
        _print_top(predictions)
    _report_failures(predictions, "videos")


def _print_top(predictions) -> None:
    for prediction in predictions:
        if prediction.error is None:
            click.echo(prediction.video)
            width = max(len(name) for name, _ in prediction.top)
            for rank, (name, probability) in enumerate(prediction.top, 1):
                click.echo(f"  {rank}. {name:<{width}}  {probability:.4f}")


def _print_windows(predictions, window_seconds: float, out_dir) -> None:
    from ucfpipe.serving.predict_files import OUT_FILES, out_folder

    for prediction in predictions:
        if prediction.error is None:
            click.echo(f"{prediction.video}: {prediction.duration:.1f} s, {len(prediction.windows)} windows of "
                       f"{window_seconds:.2f} s")
            for start, end, name in prediction.segments():
                click.echo(f"  {start:8.1f} - {end:8.1f} s  {name}")
            if out_dir:
                click.echo(f"  -> {out_folder(out_dir, prediction.video)}/{OUT_FILES}")


def _refuse_a_single_failure(items) -> None:
    """One path that cannot be read: its error is the one line (printed once), and nothing else is printed."""
    if len(items) == 1 and items[0].error is not None:
        raise UcfpipeError(items[0].error)


def _report_failures(items, noun: str) -> None:
    """Of several paths, each that could not be read on stderr, then how many (one alone: its own line)."""
    _refuse_a_single_failure(items)
    failed = [item for item in items if item.error is not None]
    for item in failed:
        click.echo(f"error: {item.error}", err=True)
    if failed:
        raise UcfpipeError(f"{len(failed)} of {len(items)} {noun} could not be read")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--backbone", required=True, type=click.Choice(list(BACKBONES)), help="The backbone to look through.")
@click.option("--weights", required=True, help="imagenet (Keras downloads it) or a weights file WITH the ImageNet classifier.")
@click.option("--frames", type=int, default=8, show_default=True, help="Frames sampled per video, as extract samples them.")
@click.option("--size", type=int, help="Frames are resized to size x size.  [default: the backbone's native size]")
@top_option("ImageNet classes to show per frame and per clip.")
@json_option("Print JSON (a list, one object per path: its frames' and its mean's top classes).")
@click.option("--table", is_flag=True, help="Print one row per path: file, folder, the clip's top-1 and its probability.")
@user_errors
def inspect(paths, backbone, weights, frames, size, top, as_json, table):
    """What the backbone's own ImageNet classifier sees in each sampled frame of a video (or in an image) and in
    the clip's mean: the check to run on a new dataset before a long extraction (docs/backbones.md). Frames are
    decoded, sampled, resized and preprocessed by stage one's own code. A directory stands for every video and
    image under it. Exit status 2 when a path cannot be read."""
    import json

    from ucfpipe.serving import inspect as library
    from ucfpipe.serving.predict_files import video_files
    from ucfpipe.video.decode import IMAGE_EXTENSIONS

    size = size if size is not None else BACKBONES[backbone].native_size
    library.check(backbone, weights, frames, size, top)  # before Keras loads
    paths = video_files(paths, IMAGE_EXTENSIONS)
    inspections = library.run(paths, backbone, weights, frames, size, top)
    done = [i for i in inspections if i.error is None]
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in done], indent=2))
    elif table:
        click.echo("\n".join(library.table(done)))
    else:
        labels = library.imagenet_labels()
        for item in done:
            click.echo(f"{item.path}: {len(item.frame_indices)} of {item.num_frames} frames")
            for rank, (index, probability) in enumerate(item.mean, 1):
                click.echo(f"  {rank}. {labels[index]}  {probability:.4f}")
            for frame_index, frame_top in zip(item.frame_indices, item.frames):
                index, probability = frame_top[0]
                click.echo(f"     frame {frame_index:>5}: {labels[index]}  {probability:.4f}")
    _report_failures(inspections, "paths")


LIVE_EXIT = {"end": EXIT_OK, "quit": EXIT_OK, "dropped": EXIT_SOURCE_LOST, "stalled": EXIT_SOURCE_LOST}  # interrupted: exit_status()


@click.command()
@run_option()
@click.option("--source", required=True, help="Camera index (0), stream URL (rtsp://, http://...), video file or file:// URL.")
@click.option("--window", help="Seconds the run sees at once (T sampled frames); auto: the run's typical clip duration.  [default: auto]")
@click.option("--stride", type=float, help="Seconds between predictions, at most the window.  [default: half the window]")
@top_option("Classes per prediction.")
@json_option("One JSON object per prediction and line: time, latency, top.")
@click.option("--out", "out_path", type=click.Path(), help="Also write the video with the top-3 drawn on it (.mp4 or .avi).")
@click.option("--display", is_flag=True, help="Show the annotated video in a window (needs OpenCV with GUI support); q quits.")
@click.option("--realtime", is_flag=True, help="Play a file source at its own speed instead of as fast as it decodes.")
@click.option("--stall", "stall_seconds", type=float, default=10.0, show_default=True,
              help="Stop when no frame arrives (or a URL does not answer) for this many seconds, at most 86400.")
@weights_option()
@user_errors
def live(run_dir, source, window, stride, top, as_json, out_path, display, realtime, stall_seconds, weights):
    """Classify a camera, stream or file as its frames arrive: the top classes every --stride seconds.

    Exit status 0 at the end of a file source, 2 for bad input (a source that cannot be opened, a full disk
    under --out), 4 when a camera or stream drops or stalls, 130 on Ctrl-C and 143 on SIGTERM (the recording
    so far kept whole); a summary line on stderr in every case but bad input."""
    import json

    from ucfpipe.serving import live as stage

    def emit(prediction):
        if as_json:
            click.echo(json.dumps(prediction.as_dict()))
        else:
            classes = "  ".join(f"{name} {p:.3f}" for name, p in prediction.top)
            click.echo(f"{prediction.time:9.2f} s  latency {prediction.latency * 1000:6.0f} ms  {classes}")

    try:
        summary = stage.serve(run_dir, source, window, stride, top, emit, out_path, display, realtime, stall_seconds,
                              weights)
    except KeyboardInterrupt:  # from the first frame on, the loop ends with a summary instead
        click.echo("live: interrupted before the first frame", err=True)
        sys.exit(interrupts.exit_status())
    if summary.ended == "interrupted":
        interrupts.ignore()  # a second signal must not cut the summary short
    click.echo(summary.line(), err=True)
    if out_path and summary.frames:
        click.echo(f"wrote {out_path}", err=True)
    sys.exit(interrupts.exit_status() if summary.ended == "interrupted" else LIVE_EXIT[summary.ended])


@click.command()
@run_option()
@click.option("--out", required=True, type=click.Path(), help="New (or empty) directory for the model and the files beside it.")
@click.option("--format", "model_format", type=click.Choice(["keras", "saved_model", "onnx"]), default="keras", show_default=True,
              help="keras: model.keras (any backend); saved_model and onnx need TensorFlow, onnx also the extra ucfpipe[onnx].")
@weights_option()
@user_errors
def export(run_dir, out, model_format, weights):
    """One deployable model: uint8 RGB frames (N, T, S, S, 3) in, class probabilities out (CNN, its
    preprocessing and the run's sequence model in one), with the classes and the sampling rule beside it."""
    from ucfpipe.serving import export as stage

    stage.run(run_dir, out, model_format, weights=weights, log=click.echo)
