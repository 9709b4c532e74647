"""Long videos: sliding windows over a whole file, each sampled like a training clip, in one decoding pass.

Windows are laid out in frames of the video: a window of W seconds holds n = round(W * fps) frames, window k
starts at frame k * round(S * fps) for stride S, and samples T frames by the run's rule (the centre frame of
T equal segments of its n frames, `decode.uniform_frame_indices`). Windows that would run past the end are
not made: the seconds after the last window take its label. A video shorter than one window is one window,
sampled over all of its frames like `predict` samples a clip.

Each frame is decoded once and only sampled frames are converted; each sampled frame goes through the CNN
once, its features kept (by frame index) until no later window samples it, so memory stays flat in the
video's length.

The per-second label track: second t's probabilities are the mean over the windows covering its middle
(t + 0.5 s), or those of the nearest window where none does; its label is their argmax. Segments are runs of
equal labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.serving.featuriser import Rate, StreamingFeaturiser, run_rate
from ucfpipe.serving.predictor import top_classes, top_dicts
from ucfpipe.video.decode import VideoError, open_video, uniform_frame_indices


@dataclass
class Window:
    start: float  # seconds
    end: float
    probabilities: np.ndarray


@dataclass
class WindowedPrediction:
    video: str
    classes: tuple[str, ...] = ()
    duration: float = 0.0  # seconds of decoded frames
    num_frames: int = 0  # frames decoding found
    windows: list[Window] = field(default_factory=list)
    error: str | None = None
    peak_cached: int = 0  # most frame features held at once: flat in the video's length
    keyframes: dict[int, str] = field(default_factory=dict)  # window number -> thumbnail (data: URI) of its middle sample

    @property
    def probabilities(self) -> np.ndarray:
        """The whole video's probabilities: the mean over its windows."""
        return np.mean([w.probabilities for w in self.windows], axis=0)

    def track(self) -> np.ndarray:
        """(seconds, classes): each second's probabilities, smoothed over the windows covering it."""
        seconds = max(1, math.ceil(self.duration - 1e-9))
        starts = np.array([w.start for w in self.windows])
        ends = np.array([w.end for w in self.windows])
        probabilities = np.stack([w.probabilities for w in self.windows])
        out = np.empty((seconds, len(self.classes)))
        for t in range(seconds):
            middle = t + 0.5
            covering = (starts <= middle) & (middle < ends)
            if not covering.any():
                covering = np.zeros(len(starts), bool)
                covering[np.argmin(np.abs((starts + ends) / 2 - middle))] = True
            out[t] = probabilities[covering].mean(axis=0)
        return out

    def segments(self) -> list[tuple[float, float, str]]:
        """(start, end, class) of each run of equal per-second labels."""
        labels = self.track().argmax(axis=1)
        changes = [t for t in range(1, len(labels)) if labels[t] != labels[t - 1]]
        starts, ends = [0] + changes, changes + [self.duration]
        return [(float(s), float(e), self.classes[labels[s]]) for s, e in zip(starts, ends)]

    def as_dict(self, top: int) -> dict:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        track = self.track()
        return {
            "video": self.video,
            "top": top_dicts(top_classes(self.probabilities, self.classes, top)),
            "duration": round(self.duration, 3),
            "windows": [{"start": round(w.start, 3), "end": round(w.end, 3),
                         "top": top_dicts(top_classes(w.probabilities, self.classes, top))} for w in self.windows],
            "seconds": [{"second": t, "class": self.classes[int(p.argmax())], "probability": round(float(p.max()), 6)}
                        for t, p in enumerate(track)],
            "segments": [{"start": s, "end": round(e, 3), "class": c} for s, e, c in self.segments()],
        }


class Layout:
    """Windows in frames of one video."""

    def __init__(self, window_frames: int, stride_frames: int, steps: int):
        self.window_frames = window_frames
        self.stride_frames = stride_frames
        self.offsets = uniform_frame_indices(window_frames, steps)  # increasing, relative to a window's first frame
        self._sampled = np.zeros(window_frames, bool)
        self._sampled[self.offsets] = True

    def first_frame(self, k: int) -> int:
        return k * self.stride_frames

    def samples(self, k: int) -> np.ndarray:
        return self.first_frame(k) + self.offsets

    def is_sampled(self, index: int) -> bool:
        """Whether any window samples frame `index` (at most window/stride windows contain it)."""
        last = index // self.stride_frames
        first = max(0, -(-(index - self.window_frames + 1) // self.stride_frames))
        return any(self._sampled[index - self.first_frame(k)] for k in range(first, last + 1))


MAX_SECONDS = 24 * 3600.0  # a window, stride or stall of over a day is a typo (1e300) or inf, never a clip's span


def check_seconds(value: float, flag: str, example: str = "2") -> float:
    """`value` if it is a finite number of seconds in (0, MAX_SECONDS]; else one line naming `flag`. Larger values
    end in OverflowError when laid out in frames. Public so that every option in seconds (live's too) says it
    the same way."""
    if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
        raise UcfpipeError(f"{flag} must be a number of seconds above 0 and at most {MAX_SECONDS:g} (one day), "
                           f"got {value:g}; pass e.g. {flag} {example}")
    return float(value)


def check_window(window: float, stride: float) -> None:
    check_seconds(window, "--window", "auto")
    check_seconds(stride, "--stride", f"{window / 2:g}")
    if stride > window:
        raise UcfpipeError(f"--stride {stride:g} s is longer than --window {window:g} s: the gaps would go unseen; "
                           "use a stride of at most the window")


def check_flags(window: str | None, stride: float | None) -> float | None:
    """--window (seconds, or auto: the run's typical clip) and --stride as predict and live take them, checked
    before anything loads; the window's seconds, or None for the run's own (the stride is checked against
    that once the run's record is read)."""
    seconds = None
    if window not in (None, "auto"):
        try:
            seconds = float(window)
        except ValueError:
            raise UcfpipeError(f"--window must be a number of seconds or auto, got {window!r}") from None
        check_seconds(seconds, "--window", "auto")
    if stride is not None:  # against the window once the run's record is read (`check_videos`, live's rate)
        check_seconds(stride, "--stride", "1" if seconds is None else f"{seconds / 2:g}")
    return seconds


def layout(rate: Rate, stride: float, fps: float, where: str = "") -> Layout:
    window_frames = round(rate.clip_seconds * fps)
    if window_frames < rate.steps:
        raise UcfpipeError(
            f"{where}--window {rate.clip_seconds:g} s is {window_frames} frames at {fps:g} fps, fewer than the run's "
            f"{rate.steps} steps; use --window {math.ceil(rate.steps / fps * 100) / 100:g} or longer"
        )
    return Layout(window_frames, max(1, round(stride * fps)), rate.steps)


def video_fps(path: str | Path) -> tuple[float, int]:
    """(fps, the container's frame count hint) of a readable video; raises VideoError otherwise."""
    import cv2

    capture = open_video(path)
    try:
        return float(capture.get(cv2.CAP_PROP_FPS) or 0.0), int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        capture.release()


def predict_video(featuriser: StreamingFeaturiser, path: str | Path, rate: Rate, stride: float,
                  progress: bool = False, keyframes: bool = False) -> WindowedPrediction:
    """Classify every window of the video at `path` in one sequential decoding pass; with `keyframes`, also keep
    a small thumbnail of each window's middle sampled frame (for the page), made from the frame already decoded."""
    from ucfpipe.core.progress import progress_bar

    path = Path(path)
    fps, hint = video_fps(path)
    if fps <= 0:
        raise VideoError(f"{path}: the container does not say its frame rate, which windows in seconds need")
    plan = layout(rate, stride, fps, where=f"{path}: ")
    prediction = WindowedPrediction(str(path), featuriser.classes)
    decoding = _Pass(featuriser, plan, fps, prediction, keyframes)
    capture = open_video(path)
    bar = progress_bar(hint or None, "frame", progress, desc=path.name, leave=False, mininterval=0.5)
    try:
        index = 0
        while capture.grab():
            if plan.is_sampled(index):
                ok, frame = capture.retrieve()
                if not ok or frame is None or frame.ndim != 3:
                    break  # a damaged file ends at its first frame that fails to decode, as in stage one
                decoding.sample(index, frame)
            decoding.classify_through(index)
            index += 1
            bar.update()
    finally:
        bar.close()
        capture.release()
    if index == 0:
        raise VideoError(f"{path}: no decodable frames")
    prediction.num_frames, prediction.duration = index, index / fps
    if not prediction.windows:
        # Shorter than one window: the whole video is the window, sampled the way `predict` samples a clip.
        whole = featuriser.predictor.probabilities(path)
        prediction.windows.append(Window(0.0, prediction.duration, whole))
    return prediction


class _Pass:
    """One decoding pass's windows: sampled frames wait for the CNN in batches, and each feature is kept (by frame
    index) until no later window samples it."""

    def __init__(self, featuriser: StreamingFeaturiser, plan: Layout, fps: float, prediction: WindowedPrediction,
                 keyframes: bool):
        self.featuriser, self.plan, self.fps, self.prediction, self.keyframes = featuriser, plan, fps, prediction, keyframes
        self.features: dict[int, np.ndarray] = {}
        self.pending: list[tuple[int, np.ndarray]] = []  # sampled frames not yet through the CNN
        self.next_window = 0
        self.last_offset = int(plan.offsets[-1])

    def sample(self, index: int, frame_bgr: np.ndarray) -> None:
        self.pending.append((index, self.featuriser.prepare(frame_bgr)))
        if self.keyframes:
            _keep_keyframe(self.prediction, self.plan, index, frame_bgr)
        if len(self.pending) >= self.featuriser.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            computed = self.featuriser.featurise(np.stack([frame for _, frame in self.pending]))
            self.features.update((index, feature) for (index, _), feature in zip(self.pending, computed))
            self.pending.clear()

    def classify_through(self, index: int) -> None:
        """Classify every window whose last sample is frame `index` or before, then forget features no later
        window samples."""
        plan, k = self.plan, self.next_window
        while plan.first_frame(k) + self.last_offset <= index:
            self.flush()
            sequence = np.stack([self.features[i] for i in plan.samples(k).tolist()])
            start = plan.first_frame(k) / self.fps
            self.prediction.windows.append(Window(start, start + plan.window_frames / self.fps,
                                                  self.featuriser.classify(sequence)))
            k = self.next_window = k + 1
            keep_from = plan.first_frame(k) + int(plan.offsets[0])
            self.prediction.peak_cached = max(self.prediction.peak_cached, len(self.features))
            for old in [i for i in self.features if i < keep_from]:
                del self.features[old]


def _keep_keyframe(prediction: WindowedPrediction, plan: Layout, index: int, frame_bgr: np.ndarray) -> None:
    """The thumbnail of window k, when frame `index` is its middle sample (k = (index - middle) / stride)."""
    import cv2

    from ucfpipe.core.html import jpeg_data_uri

    since = index - int(plan.offsets[len(plan.offsets) // 2])
    if since >= 0 and since % plan.stride_frames == 0:
        prediction.keyframes[since // plan.stride_frames] = jpeg_data_uri(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))


def recorded_rate(run, window: float | None = None) -> Rate:
    """The run's rate from its record alone, before Keras loads: T of its stage one over `window` seconds, by
    default its typical clip (`featuriser.run_rate`, which reads only `predictor.run` and `.stage_one.frames`)."""
    from types import SimpleNamespace

    from ucfpipe.config import ExtractConfig

    frames = run.extract_config.get("frames", ExtractConfig.frames)
    return run_rate(SimpleNamespace(run=run, stage_one=SimpleNamespace(frames=int(frames))), window)


def check_videos(videos, rate: Rate, stride: float) -> None:
    """The window and stride against the run's rate and every readable video's frame rate, with OpenCV only:
    a window too short for any file stops everything before Keras loads or the first frame is decoded."""
    check_window(rate.clip_seconds, stride)
    for video in videos:
        try:
            fps, _ = video_fps(video)
        except VideoError:
            continue  # reported per file when its windows are made
        if fps > 0:
            layout(rate, stride, fps, where=f"{video}: ")


def run(videos, predictor, rate: Rate, stride: float, progress: bool = False, keyframes: bool = False) -> list[WindowedPrediction]:
    """Every video's windows; an unreadable file is a per-file error, a window too short for any file's frame
    rate stops everything before the first is decoded. `keyframes`: a thumbnail per window, for the page."""
    check_videos(videos, rate, stride)
    return predict_videos(videos, predictor, rate, stride, progress, keyframes)


def predict_videos(videos, predictor, rate: Rate, stride: float, progress: bool = False,
                   keyframes: bool = False) -> list[WindowedPrediction]:
    """`run` for videos already checked (`check_videos`): each video's windows, or its error."""
    featuriser = StreamingFeaturiser(predictor)
    out = []
    for video in videos:
        try:
            out.append(predict_video(featuriser, video, rate, stride, progress, keyframes))
        except VideoError as err:
            out.append(WindowedPrediction(str(video), error=str(err)))
    return out


def window_rows(prediction: WindowedPrediction, top: int) -> tuple[list[str], list[list]]:
    top = min(top, len(prediction.classes))  # --top beyond the class count: every class, and a header to match
    header = ["start", "end"] + [f"{name}_{rank}" for rank in range(1, top + 1) for name in ("class", "probability")]
    rows = []
    for w in prediction.windows:
        cells = [f"{w.start:.3f}", f"{w.end:.3f}"]
        for name, probability in top_classes(w.probabilities, prediction.classes, top):
            cells += [name, f"{probability:.6f}"]
        rows.append(cells)
    return header, rows


def second_rows(prediction: WindowedPrediction) -> tuple[list[str], list[list]]:
    header = ["second", "class", "probability"] + list(prediction.classes)
    rows = [[t, prediction.classes[int(p.argmax())], f"{p.max():.6f}"] + [f"{v:.6f}" for v in p]
            for t, p in enumerate(prediction.track())]
    return header, rows


def write_outputs(prediction: WindowedPrediction, directory: Path, top: int) -> None:
    """directory/windows.csv, seconds.csv, timeline.png and report.html: all four or none (a full disk leaves
    neither a half folder nor an empty one; a rerun replaces the four of an earlier run)."""
    from ucfpipe.core.files import replacing_dir, write_csv, write_text
    from ucfpipe.serving.timeline import page, plot_timeline

    with replacing_dir(directory, update=True) as staging:
        write_csv(staging / "windows.csv", *window_rows(prediction, top))
        write_csv(staging / "seconds.csv", *second_rows(prediction))
        plot_timeline(prediction, staging / "timeline.png")
        write_text(staging / "report.html", page(prediction, top))
