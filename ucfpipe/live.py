"""Live: classify a camera, a stream URL or a file played as a stream, as its frames arrive.

A source is any iterable of (time in seconds, BGR frame): `open_source` wraps cv2.VideoCapture; tests pass
a generator. A reader thread pulls frames into a small queue, so a source that stalls is noticed (no frame
for `stall_seconds`) instead of blocking forever. Frames are sampled at the run's rate (T over the typical
clip duration of its cache), each sampled frame goes through the CNN once into a ring buffer of the last T
features, and every `stride` seconds of source time the ring is classified. Latency is measured from the
arrival of the newest frame in the ring to the prediction.

How a run ends: "end" (a file or a generator source ran out), "dropped" (a camera or URL stopped giving
frames), "stalled" (no frame for `stall_seconds`), "interrupted" (Ctrl-C) or "quit" (q in the window).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import temp_path
from .errors import UcfpipeError
from .stream import Rate, StreamingFeaturiser, top_classes
from .video import VideoError, open_video

ANNOTATED_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


class SourceDropped(Exception):
    """A live source (camera, URL) stopped giving frames."""


@dataclass
class Prediction:
    time: float  # source time of the newest frame classified, seconds
    latency: float  # seconds from that frame's arrival to this prediction
    top: list[tuple[str, float]]

    def as_dict(self) -> dict:
        return {"time": round(self.time, 3), "latency": round(self.latency, 4),
                "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top]}


@dataclass
class Summary:
    source: str
    ended: str = "end"  # end | dropped | stalled | interrupted | quit
    reason: str = ""
    frames: int = 0
    sampled: int = 0
    predictions: int = 0
    first_time: float | None = None
    last_time: float | None = None
    latencies: list[float] = field(default_factory=list)

    def line(self) -> str:
        span = (self.last_time or 0.0) - (self.first_time or 0.0)
        text = (f"live: {self.frames} frames over {span:.1f} s of {self.source}, {self.sampled} sampled, "
                f"{self.predictions} predictions")
        if self.latencies:
            text += f", latency median {np.median(self.latencies) * 1000:.0f} ms, max {max(self.latencies) * 1000:.0f} ms"
        return text + f"; ended: {self.reason or self.ended}"


# -- sources --------------------------------------------------------------------------------------------------
class CaptureSource:
    """Frames of an OpenCV capture as (time, BGR frame). A file's times come from its frame counter and fps
    (with --realtime the frames are paced to them); a camera's or URL's from the capture's own timestamps,
    or the clock where it gives none."""

    def __init__(self, spec: str, realtime: bool = False):
        import cv2

        self.spec = spec
        if spec.isdigit():
            self.kind, self.capture = "camera", cv2.VideoCapture(int(spec))
        elif "://" in spec:
            self.kind, self.capture = "url", cv2.VideoCapture(spec)
        else:
            self.kind, self.capture = "file", open_video(spec)
        if not self.capture.isOpened():
            raise UcfpipeError(f"cannot open the {self.kind} source {spec!r} (no such device, unreachable URL or "
                               "unsupported stream); check it with another player first")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.realtime = realtime

    def __iter__(self):
        import cv2

        count, start, last = 0, time.perf_counter(), -1.0
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok or frame is None:
                    if self.kind == "file":
                        return
                    raise SourceDropped(f"the {self.kind} source {self.spec!r} stopped giving frames")
                if self.kind == "file" and self.fps > 0:
                    moment = count / self.fps
                else:
                    stamp = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    moment = stamp if stamp > last else time.perf_counter() - start
                if self.realtime:
                    time.sleep(max(0.0, start + moment - time.perf_counter()))
                last = moment
                count += 1
                yield moment, frame
        finally:
            self.capture.release()


def open_source(spec: str, realtime: bool = False) -> CaptureSource:
    try:
        return CaptureSource(str(spec), realtime)
    except VideoError as err:
        raise UcfpipeError(str(err)) from None


_END = object()


def _read_into(source, frames: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: (time, frame, arrival) into `frames`, then _END or the exception that ended it."""
    try:
        for moment, image in source:
            item = (float(moment), image, time.perf_counter())
            while not stop.is_set():
                try:
                    frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        frames.put(_END)
    except BaseException as err:  # handed to the main thread, which says so and stops
        frames.put(err)


# -- outputs --------------------------------------------------------------------------------------------------
class AnnotatedWriter:
    """The frames with the latest top-3 drawn on them, written to a temporary name and renamed when done."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        if self.path.suffix.lower() not in ANNOTATED_CODECS:
            raise UcfpipeError(f"--out {self.path} must end in {' or '.join(ANNOTATED_CODECS)}")
        if not self.path.parent.is_dir():
            raise UcfpipeError(f"--out {self.path}: folder {self.path.parent} does not exist")
        self.tmp = temp_path(self.path, keep_suffix=True)  # frames arrive over time: `replacing`'s naming, renamed in finish()
        self.fps = fps if fps > 0 else 25.0
        self.writer = None

    def write(self, frame: np.ndarray, top: list[tuple[str, float]] | None) -> None:
        import cv2

        if self.writer is None:
            height, width = frame.shape[:2]
            codec = cv2.VideoWriter_fourcc(*ANNOTATED_CODECS[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), codec, self.fps, (width, height))
            if not self.writer.isOpened():
                raise UcfpipeError(f"OpenCV cannot write {self.path.suffix} video to {self.path.parent}")
        self.writer.write(annotate(frame, top))

    def finish(self) -> bool:
        if self.writer is None:
            return False
        self.writer.release()
        os.replace(self.tmp, self.path)
        return True

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
        self.tmp.unlink(missing_ok=True)


def annotate(frame: np.ndarray, top: list[tuple[str, float]] | None) -> np.ndarray:
    """A copy of `frame` with up to three "class  probability" lines in its top-left corner."""
    import cv2

    out = frame.copy()
    scale = max(0.35, out.shape[0] / 480)
    for row, (name, probability) in enumerate((top or [])[:3]):
        y = int((row + 1) * 22 * scale)
        text = f"{name} {probability:.2f}"
        cv2.putText(out, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, (5, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def check_display() -> None:
    """--display needs an OpenCV with GUI support and a display to show it on."""
    import cv2

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.name == "nt"):
        raise UcfpipeError("--display needs a display (DISPLAY is not set); use --out annotated.mp4 instead")
    try:
        cv2.namedWindow("ucfpipe live")
    except cv2.error:
        raise UcfpipeError("--display needs OpenCV with GUI support; opencv-python-headless (installed) has none: "
                           "pip install opencv-python, or use --out annotated.mp4") from None


# -- the loop -------------------------------------------------------------------------------------------------
def run(featuriser: StreamingFeaturiser, source, rate: Rate, stride: float, top: int = 5, emit=print,
        out: AnnotatedWriter | None = None, display: bool = False, stall_seconds: float = 10.0,
        name: str = "source") -> Summary:
    """Classify `source` (an iterable of (seconds, BGR frame)) as it arrives; `emit(Prediction)` at each stride."""
    if not stride > 0 or not stall_seconds > 0:
        raise UcfpipeError(f"--stride and --stall must be positive numbers of seconds, got {stride} and {stall_seconds}")
    summary = Summary(name)
    featuriser.warm_up()
    frames: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    reader = threading.Thread(target=_read_into, args=(source, frames, stop), name="ucfpipe-live-reader", daemon=True)
    reader.start()
    next_sample = next_prediction = None
    latest: list[tuple[str, float]] | None = None
    completed = False
    try:
        while True:
            try:
                item = frames.get(timeout=stall_seconds)
            except queue.Empty:
                summary.ended, summary.reason = "stalled", f"no frame for {stall_seconds:g} s: the source stalled"
                break
            if item is _END:
                break
            if isinstance(item, BaseException):
                if not isinstance(item, SourceDropped):
                    raise item
                summary.ended, summary.reason = "dropped", str(item)
                break
            moment, image, arrived = item
            summary.frames += 1
            summary.first_time = moment if summary.first_time is None else summary.first_time
            summary.last_time = moment
            if next_sample is None or moment >= next_sample - 1e-9:
                featuriser.push(featuriser.featurise(featuriser.prepare(image)[None])[0])
                summary.sampled += 1
                next_sample = (moment if next_sample is None else next_sample) + rate.sample_seconds
                while next_sample <= moment:  # the source jumped ahead (dropped frames): keep the grid
                    next_sample += rate.sample_seconds
                if featuriser.ready and (next_prediction is None or moment >= next_prediction - 1e-9):
                    probabilities = featuriser.classify_ring()
                    latest = top_classes(probabilities, featuriser.classes, top)
                    prediction = Prediction(moment, time.perf_counter() - arrived, latest)
                    summary.predictions += 1
                    summary.latencies.append(prediction.latency)
                    next_prediction = moment + stride
                    emit(prediction)
            if out is not None:
                out.write(image, latest)
            if display and _show(image, latest):
                summary.ended, summary.reason = "quit", "q pressed"
                break
        completed = True
    except KeyboardInterrupt:
        summary.ended, summary.reason = "interrupted", "interrupted (Ctrl-C)"
        completed = True
    finally:
        stop.set()
        if display:
            import cv2

            cv2.destroyAllWindows()
        if out is not None:
            # What was shown up to the stop is a whole video; after an unexpected error nothing is kept.
            out.finish() if completed else out.discard()
    return summary


def _show(image: np.ndarray, top) -> bool:
    """Show the annotated frame; True when q was pressed."""
    import cv2

    cv2.imshow("ucfpipe live", annotate(image, top))
    return (cv2.waitKey(1) & 0xFF) == ord("q")
