"""`ucfpipe predict`'s work: the paths given (a folder stands for its videos) and every setting that needs no model
checked before Keras loads (10-30 s: a typo is refused at once), the run read once, then each video classified
whole (`predictor`) or in windows (`windows`), and --out's folders written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.core.destinations import kind, output_dir
from ucfpipe.serving import windows
from ucfpipe.serving.predictor import Predictor, check_top

OUT_FILES = "windows.csv, seconds.csv, timeline.png, report.html"  # what --out writes per video (windows.write_outputs)


@dataclass
class Predictions:
    """One entry per video, in order: `VideoPrediction`s, or `WindowedPrediction`s with windows (each an error
    where its file could not be read)."""

    items: list
    window_seconds: float | None = None  # windows: the span of each; None for whole videos


def video_files(paths, extensions=()) -> list[str]:
    """Files as given; a directory stands for every video under it (by extension, recursively, sorted; also
    `extensions`). A path that does not exist is a typo, refused before anything loads; a file that cannot be
    decoded is reported per file once the model is there."""
    from ucfpipe.datasets.base import VIDEO_EXTENSIONS

    extensions = (*VIDEO_EXTENSIONS, *extensions)
    missing = [str(path) for path in paths if not os.path.lexists(path)]
    if missing:
        raise UcfpipeError(f"{len(missing)} of {len(paths)} videos do not exist ({', '.join(missing[:3])}"
                           f"{', ...' if len(missing) > 3 else ''}); check the paths")
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(str(path))
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions and p.is_file())
        if not found:
            raise UcfpipeError(f"{path} is a directory with no video files under it ({', '.join(extensions)}); "
                               "pass video files or a folder that holds some")
        files += map(str, found)
    return files


def out_folder(out_dir: str | Path, video: str) -> Path:
    """Where --out writes a video's results: OUT/<its file name without the extension>."""
    return Path(out_dir) / Path(video).stem


def check_out(out: Path, videos: list[str]) -> None:
    """--out gets one folder per video, named by its file name: two videos of one name, or a file where a
    folder must go, would fail only after every video was classified."""
    output_dir(out, "--out")  # a file, a device, a read-only folder: refused before the model loads
    seen: dict[str, str] = {}
    for video in videos:
        folder = out_folder(out, video)
        if folder.name in seen:
            raise UcfpipeError(f"--out writes each video's results to OUT/<file name>/, and {seen[folder.name]} and {video} "
                               f"would both write {folder}; predict them in separate runs with different --out folders")
        seen[folder.name] = video
        if os.path.lexists(folder) and not folder.is_dir():
            found = kind((os.stat if folder.exists() else os.lstat)(folder).st_mode)
            raise UcfpipeError(f"{folder} is {found}, where --out would write {video}'s results; move it or pick another --out")


def run(paths, run_dir: str | Path, top: int = 5, weights: str | None = None, window: str | None = None,
        stride: float | None = None, out_dir: str | Path | None = None, progress: bool = False) -> Predictions:
    """Classify the videos at `paths` with the run (or ensemble) at `run_dir`: whole, or with `window` (seconds
    or "auto"), `stride` or `out_dir` in sliding windows, each video's results then written to
    `out_folder(out_dir, video)`. Ctrl-C is `Interrupted`, saying that a rerun starts over."""
    from ucfpipe.stage_two import ensemble

    check_top(top)
    windowed = window is not None or stride is not None or out_dir is not None
    seconds = windows.check_flags(window, stride)
    videos = video_files(paths)
    if out_dir is not None:
        check_out(Path(out_dir), videos)
    members = ensemble.load_run_or_ensemble(run_dir)
    try:
        if not windowed:
            predictor = Predictor(run_dir, weights, members)
            return Predictions([predictor.predict(video, top) for video in videos])
        return _windows(videos, run_dir, members, weights, seconds, stride, top, out_dir, progress)
    except KeyboardInterrupt:
        # Predict keeps nothing between runs: "rerun to continue" (extract's, train's) would promise a resume.
        written = "; the --out folders written so far are whole" if out_dir is not None else ""
        raise Interrupted("interrupted; a rerun of the same command classifies every video again from the start"
                          f"{written}") from None


def _windows(videos, run_dir, members, weights, seconds, stride, top, out_dir, progress) -> Predictions:
    rate = windows.recorded_rate(members[0], seconds)  # the run's record, without Keras
    stride = stride if stride is not None else rate.clip_seconds / 2
    windows.check_videos(videos, rate, stride)  # once, before Keras loads
    predictor = Predictor(run_dir, weights, members)
    predictions = windows.predict_videos(videos, predictor, rate, stride, progress, keyframes=bool(out_dir))
    for prediction in predictions if out_dir else ():
        if prediction.error is None:
            windows.write_outputs(prediction, out_folder(out_dir, prediction.video), top)
    return Predictions(predictions, rate.clip_seconds)
