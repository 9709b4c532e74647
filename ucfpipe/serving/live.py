"""Live: classify a camera, a stream URL or a file played as a stream, as its frames arrive.

A source is any iterable of (time in seconds, BGR frame): `sources.open_source` wraps cv2.VideoCapture; tests
pass a generator. A reader thread (`sources.read_into`) pulls frames into a small queue, so a source that stalls
is noticed (no frame for `stall_seconds`) instead of blocking forever; --out records through `recording`. Frames are sampled at the run's rate (T over the typical
clip duration of its cache), each sampled frame goes through the CNN once into a ring buffer of the last T
features, and every `stride` seconds of source time the ring is classified (at the first sample at or after
each k x stride from the first prediction). Latency is measured from the arrival of the newest frame in the
ring to the prediction.

How a run ends: "end" (a file or a generator source ran out), "dropped" (a camera or URL stopped giving
frames), "stalled" (no frame for `stall_seconds`), "interrupted" (Ctrl-C or SIGTERM) or "quit" (q in the
window). A source that ends, drops or stalls before the ring is first full is classified once over all its
frames, sampled the way `predict` samples a clip. `serve` is the whole of `ucfpipe live` but its printing.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe.core import interrupts
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.serving import windows
from ucfpipe.serving.featuriser import Rate, StreamingFeaturiser, run_rate
from ucfpipe.serving.predictor import Predictor, check_top, top_classes, top_dicts
from ucfpipe.serving.recording import AnnotatedWriter, annotate
from ucfpipe.serving.sources import END, SourceDropped, open_source, read_into
from ucfpipe.serving.windows import check_seconds
from ucfpipe.video.decode import uniform_frame_indices


def check_settings(stride: float | None, stall_seconds: float) -> None:
    """What live can refuse before anything loads (the stride against the window once the window is known,
    the same check as predict's: `windows.check_window`)."""
    check_seconds(stall_seconds, "--stall", "10")
    if stride is not None:
        check_seconds(stride, "--stride", "1")


@dataclass
class LivePrediction:
    time: float  # source time of the newest frame classified, seconds
    latency: float  # seconds from that frame's arrival to this prediction
    top: list[tuple[str, float]]

    def as_dict(self) -> dict:
        return {"time": round(self.time, 3), "latency": round(self.latency, 4),
                "top": top_dicts(self.top)}


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
def serve(run_dir: str | Path, source: str, window: str | None = None, stride: float | None = None, top: int = 5,
          emit=print, out_path: str | Path | None = None, display: bool = False, realtime: bool = False,
          stall_seconds: float = 10.0, weights: str | None = None) -> Summary:
    """`ucfpipe live`: the settings checked before anything loads, the source opened, the run rebuilt, then `run`
    until the source ends, drops, stalls, q is pressed or Ctrl-C/SIGTERM comes (its Summary says which)."""
    check_top(top)
    check_settings(stride, stall_seconds)
    seconds = windows.check_flags(window, stride)  # predict's --window, auto included
    if display:
        check_display()
    writer = AnnotatedWriter(out_path, 0.0) if out_path else None
    frames = open_source(source, realtime, stall_seconds)
    predictor = Predictor(run_dir, weights)
    rate = run_rate(predictor, seconds)
    stride = stride if stride is not None else rate.clip_seconds / 2
    windows.check_window(rate.clip_seconds, stride)  # predict's refusal of a stride longer than the window
    if frames.fps > 0:  # the same refusal as predict --window: fewer frames than T would repeat frames
        windows.layout(rate, rate.clip_seconds, frames.fps, where=f"{source}: ")
    if writer is not None:
        writer.fps = frames.fps if frames.fps > 0 else writer.fps
    return run(StreamingFeaturiser(predictor), frames, rate, stride, top=top, emit=emit, out=writer, display=display,
               stall_seconds=stall_seconds, name=source)


def run(featuriser: StreamingFeaturiser, source, rate: Rate, stride: float, top: int = 5, emit=print,
        out: AnnotatedWriter | None = None, display: bool = False, stall_seconds: float = 10.0,
        name: str = "source") -> Summary:
    """Classify `source` (an iterable of (seconds, BGR frame)) as it arrives; `emit(LivePrediction)` at each stride."""
    check_settings(stride, stall_seconds)
    sampler = _Sampler(featuriser, rate, stride, top, emit, Summary(name))
    summary = sampler.summary
    frames: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    reader = threading.Thread(target=read_into, args=(source, frames, stop), name="ucfpipe-live-reader", daemon=True)
    completed = False
    try:
        featuriser.warm_up()
        reader.start()
        for moment, image, arrived in _arrivals(frames, stall_seconds, summary):
            sampler.take(moment, image, arrived)
            if out is not None:
                out.write(image, sampler.latest)
            if display and _show(image, sampler.latest):
                summary.ended, summary.reason = "quit", "q pressed"
                break
        sampler.classify_a_short_source()
        completed = True
    except KeyboardInterrupt:
        summary.ended, summary.reason = "interrupted", f"interrupted ({interrupts.how()})"
        completed = True
    finally:
        stop.set()
        if display:
            import cv2

            cv2.destroyAllWindows()
        # What was shown up to the stop is a whole video; after an unexpected error nothing is kept. A second
        # Ctrl-C or SIGTERM waits until the file is whole, and until the reader has released its capture
        # (OpenCV torn down mid-read can abort).
        with interrupts.deferred(then_raise=False):
            if out is not None:
                out.finish() if completed else out.discard()
            if reader.is_alive():
                reader.join(timeout=2.0)
    return summary


def _arrivals(frames: queue.Queue, stall_seconds: float, summary: Summary):
    """(time, frame, arrival) from the reader thread until the source ends; a stall or a drop is said in `summary`,
    anything else the reader met is raised here."""
    while True:
        try:
            item = frames.get(timeout=stall_seconds)
        except queue.Empty:
            summary.ended, summary.reason = "stalled", f"no frame for {stall_seconds:g} s: the source stalled"
            return
        if item is END:
            return
        if isinstance(item, BaseException):
            if not isinstance(item, SourceDropped):
                raise item
            summary.ended, summary.reason = "dropped", str(item)
            return
        yield item


class _Sampler:
    """Frames in, predictions out: frames sampled at the run's rate, each through the CNN once into the ring, and
    the ring classified every `stride` seconds of source time (on the grid k x stride from the first prediction)."""

    def __init__(self, featuriser: StreamingFeaturiser, rate: Rate, stride: float, top: int, emit, summary: Summary):
        self.featuriser, self.rate, self.stride, self.top, self.emit, self.summary = featuriser, rate, stride, top, emit, summary
        self.next_sample = self.next_prediction = self.first_prediction = None
        self.latest: list[tuple[str, float]] | None = None  # the last prediction's top, drawn on the frames
        self.before_first: list[np.ndarray] = []  # every frame, prepared, until the first prediction (a short source's one)
        self.arrived = 0.0

    def take(self, moment: float, image: np.ndarray, arrived: float) -> None:
        summary, featuriser = self.summary, self.featuriser
        self.arrived = arrived
        summary.frames += 1
        summary.first_time = moment if summary.first_time is None else summary.first_time
        summary.last_time = moment
        prepared = featuriser.prepare(image) if summary.predictions == 0 else None
        if prepared is not None:
            self.before_first.append(prepared)
        if self.next_sample is not None and moment < self.next_sample - 1e-9:
            return
        frame = prepared if prepared is not None else featuriser.prepare(image)
        featuriser.push(featuriser.featurise(frame[None])[0])
        summary.sampled += 1
        self.next_sample = (moment if self.next_sample is None else self.next_sample) + self.rate.sample_seconds
        while self.next_sample <= moment:  # the source jumped ahead (dropped frames): keep the grid
            self.next_sample += self.rate.sample_seconds
        if featuriser.ready and (self.next_prediction is None or moment >= self.next_prediction - 1e-9):
            prediction = self._prediction(moment, featuriser.classify_ring())
            # On the stride's grid (k x stride from the first): `moment + stride` would make a sample landing
            # just before the next time wait a whole sample more, and every delay would add up.
            first = self.first_prediction = moment if self.first_prediction is None else self.first_prediction
            self.next_prediction = first + (math.floor((moment - first) / self.stride + 1e-9) + 1) * self.stride
            self.before_first.clear()
            self.emit(prediction)

    def classify_a_short_source(self) -> None:
        """A source that ended, dropped or stalled before the ring was first full is one window: all its frames,
        sampled the way `predict` samples a clip."""
        if self.summary.predictions or not self.before_first or self.summary.ended not in ("end", "dropped", "stalled"):
            return
        chosen = uniform_frame_indices(len(self.before_first), self.featuriser.steps)
        sequence = self.featuriser.featurise(np.stack([self.before_first[i] for i in chosen.tolist()]))
        self.emit(self._prediction(self.summary.last_time, self.featuriser.classify(sequence)))

    def _prediction(self, moment: float, probabilities: np.ndarray) -> LivePrediction:
        self.latest = top_classes(probabilities, self.featuriser.classes, self.top)
        prediction = LivePrediction(moment, time.perf_counter() - self.arrived, self.latest)
        self.summary.predictions += 1
        self.summary.latencies.append(prediction.latency)
        return prediction


def _show(image: np.ndarray, top) -> bool:
    """Show the annotated frame; True when q was pressed."""
    import cv2

    cv2.imshow("ucfpipe live", annotate(image, top))
    return (cv2.waitKey(1) & 0xFF) == ord("q")
