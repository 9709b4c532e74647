"""Live: classify a camera, a stream URL or a file played as a stream, as its frames arrive.

A source is any iterable of (time in seconds, BGR frame): `open_source` wraps cv2.VideoCapture; tests pass
a generator. A reader thread pulls frames into a small queue, so a source that stalls is noticed (no frame
for `stall_seconds`) instead of blocking forever. Frames are sampled at the run's rate (T over the typical
clip duration of its cache), each sampled frame goes through the CNN once into a ring buffer of the last T
features, and every `stride` seconds of source time the ring is classified (at the first sample at or after
each k x stride from the first prediction). Latency is measured from the arrival of the newest frame in the
ring to the prediction.

How a run ends: "end" (a file or a generator source ran out), "dropped" (a camera or URL stopped giving
frames), "stalled" (no frame for `stall_seconds`), "interrupted" (Ctrl-C or SIGTERM) or "quit" (q in the
window). A source that ends, drops or stalls before the ring is first full is classified once over all its
frames, sampled the way `predict` samples a clip.
"""

from __future__ import annotations

import errno
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import numpy as np

from ucfpipe.core import interrupts
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import output, replacing
from ucfpipe.core.queues import put_unless_stopped
from ucfpipe.serving.featuriser import Rate, StreamingFeaturiser
from ucfpipe.serving.predictor import top_classes
from ucfpipe.serving.windows import MAX_SECONDS, check_seconds
from ucfpipe.video.decode import VideoError, open_video, uniform_frame_indices

ANNOTATED_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# queue.get and OpenCV's timeouts overflow far below inf (threading.TIMEOUT_MAX is about 292 years, and a
# wait past it raised OverflowError, then the reader thread inside OpenCV aborted the interpreter); a day
# is longer than any source that still means to send a frame.
# Free space below which a recording cannot go on, and a recording that does not read back ran out of it.
LOW_SPACE_BYTES = 1 << 20


def check_settings(stride: float | None, stall_seconds: float) -> None:
    """What live can refuse before anything loads (the stride against the window once the window is known,
    the same check as predict's: `windows.check_window`)."""
    check_seconds(stall_seconds, "--stall", "10")
    if stride is not None:
        check_seconds(stride, "--stride", "1")


class SourceDropped(Exception):
    """A live source (camera, URL) stopped giving frames."""


@dataclass
class LivePrediction:
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

    def __init__(self, spec: str, realtime: bool = False, stall_seconds: float = 10.0):
        import cv2

        self.spec = spec
        waited = ""
        if spec.isdigit():
            self.kind, self.capture = "camera", cv2.VideoCapture(int(spec))
        elif spec.lower().startswith("file://"):
            self.kind, self.capture = "file", open_video(file_url_path(spec))
        elif "://" in spec:
            # FFmpeg waits 30 s for a server that accepts and never answers, on opening and on each read:
            # bounded by --stall, like a source that stops sending.
            milliseconds = int(min(stall_seconds, MAX_SECONDS) * 1000)
            started = time.perf_counter()
            self.kind, self.capture = "url", cv2.VideoCapture(spec, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, milliseconds, cv2.CAP_PROP_READ_TIMEOUT_MSEC, milliseconds])
            if time.perf_counter() - started >= 0.9 * stall_seconds:
                waited = f", no answer within --stall {stall_seconds:g} s"
        else:
            self.kind, self.capture = "file", open_video(spec)
        if not self.capture.isOpened():
            raise UcfpipeError(f"cannot open the {self.kind} source {spec!r} (no such device, unreachable URL or "
                               f"unsupported stream{waited}); check it with another player first")
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


def file_url_path(spec: str) -> str:
    """The path a file:// URL names (file:///abs/path, file://localhost/abs/path, %20 for a space)."""
    parsed = urlparse(spec)
    if parsed.netloc not in ("", "localhost"):
        raise UcfpipeError(f"--source {spec}: a file:// URL names a file on this machine (file:///path/to/video.mp4), "
                           f"not on {parsed.netloc}")
    return url2pathname(unquote(parsed.path))


def open_source(spec: str, realtime: bool = False, stall_seconds: float = 10.0) -> CaptureSource:
    spec = str(spec)
    if not spec.strip():
        raise UcfpipeError("--source is empty; pass a camera index (0), a stream URL or a video file")
    if "://" not in spec and not spec.isdigit() and Path(spec).is_dir():
        raise UcfpipeError(f"--source {spec} is a directory; live plays one source: pass a video file in it "
                           "(predict takes a folder)")
    try:
        return CaptureSource(spec, realtime, stall_seconds)
    except VideoError as err:
        raise UcfpipeError(str(err)) from None


_END = object()


def _read_into(source, frames: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: (time, frame, arrival) into `frames`, then _END or the exception that ended it.
    Every hand-over gives up once the main thread stopped, so the thread (and the capture it releases) ends."""

    def hand(item) -> bool:
        return put_unless_stopped(frames, item, stop)

    try:
        for moment, image in source:
            if not hand((float(moment), image, time.perf_counter())):
                return
        hand(_END)
    except BaseException as err:  # handed to the main thread, which says so and stops
        hand(err)


# -- outputs --------------------------------------------------------------------------------------------------
class AnnotatedWriter:
    """The frames with the latest top-3 drawn on them, written the one way (`core.files.replacing`: a temporary
    beside the target, synced, renamed) when the run stops. OpenCV's writer says nothing when its disk fills
    (it went on to write a file with no index, which no player opens), so the recording is checked before
    it takes its name: it opens, holds every frame written, and its first and last frames decode. A
    recording that fails the check, or a disk that runs low while recording, is removed: one line, and no
    file under the name."""

    SPACE_CHECK_SECONDS = 1.0  # how often the free space is looked at while recording

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        output(self.path, "--out", stdout=False)  # a folder, a missing or read-only one: refused before any frame
        if self.path.suffix.lower() not in ANNOTATED_CODECS:
            raise UcfpipeError(f"--out {self.path} must end in {' or '.join(ANNOTATED_CODECS)}")
        self.fps = fps if fps > 0 else 25.0
        self.writer = None
        self.frames = 0
        self.tmp: Path | None = None
        self._replacing = None  # the open `replacing` block, from the first frame to finish() or discard()
        self._space_checked = 0.0

    def write(self, frame: np.ndarray, top: list[tuple[str, float]] | None) -> None:
        import cv2

        if self.writer is None:
            self._replacing = replacing(self.path, keep_suffix=True)  # the suffix tells OpenCV the container
            self.tmp = self._replacing.__enter__()
            height, width = frame.shape[:2]
            codec = cv2.VideoWriter_fourcc(*ANNOTATED_CODECS[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), codec, self.fps, (width, height))
            if not self.writer.isOpened():
                self._abandon(UcfpipeError(f"OpenCV cannot write {self.path.suffix} video to {self.path.parent}"))
        annotated = annotate(frame, top)
        with interrupts.deferred():  # the count must match what the file holds, whenever a signal comes
            self.writer.write(annotated)
            self.frames += 1
        now = time.monotonic()
        if now - self._space_checked >= self.SPACE_CHECK_SECONDS:
            self._space_checked = now
            if _free_bytes(self.path.parent) < LOW_SPACE_BYTES:
                self._abandon(_no_space(self.tmp))

    def finish(self) -> bool:
        """Close, check and rename the recording; False when no frame came (nothing written)."""
        if self._replacing is None:
            return False
        self.writer.release()
        self.writer = None
        problem = self._unreadable()
        if problem:
            low = _free_bytes(self.path.parent) < LOW_SPACE_BYTES
            self._abandon(_no_space(self.tmp) if low else UcfpipeError(
                f"{self.path}: OpenCV wrote a recording that does not read back ({problem}); nothing was kept"))
        block, self._replacing = self._replacing, None
        block.__exit__(None, None, None)  # sync and rename; a full disk there is DiskFull too
        return True

    def discard(self) -> None:
        if self._replacing is not None:
            try:
                self._abandon(_Discarded())
            except _Discarded:
                pass

    def _abandon(self, err: BaseException) -> None:
        """Release the writer and end the `replacing` block with `err`: the temporary goes; an ENOSPC comes
        out as atomic's one full-disk line, anything else as itself."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        block, self._replacing = self._replacing, None
        if block is not None:
            block.__exit__(type(err), err, None)
        raise err

    def _unreadable(self) -> str:
        """Why the temporary is not the whole recording, or "" when it is."""
        import cv2

        capture = cv2.VideoCapture(str(self.tmp))
        try:
            if not capture.isOpened():
                return "it does not open"
            held = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if held != self.frames:
                return f"it holds {held} of the {self.frames} frames written"
            for index in sorted({0, self.frames - 1}):
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, image = capture.read()
                if not ok or image is None:
                    return f"frame {index} does not decode"
            return ""
        finally:
            capture.release()


class _Discarded(Exception):
    """Ends a recording that is not kept (the run failed)."""


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return LOW_SPACE_BYTES  # unknown: never the reason to stop


def _no_space(path: Path | None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


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
    """Classify `source` (an iterable of (seconds, BGR frame)) as it arrives; `emit(LivePrediction)` at each stride."""
    check_settings(stride, stall_seconds)
    summary = Summary(name)
    frames: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    reader = threading.Thread(target=_read_into, args=(source, frames, stop), name="ucfpipe-live-reader", daemon=True)
    next_sample = next_prediction = first_prediction = None
    latest: list[tuple[str, float]] | None = None
    before_first: list[np.ndarray] = []  # every frame, prepared, until the first prediction (a short source's one)
    arrived = 0.0
    completed = False
    try:
        featuriser.warm_up()
        reader.start()
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
            prepared = featuriser.prepare(image) if summary.predictions == 0 else None
            if prepared is not None:
                before_first.append(prepared)
            if next_sample is None or moment >= next_sample - 1e-9:
                frame = prepared if prepared is not None else featuriser.prepare(image)
                featuriser.push(featuriser.featurise(frame[None])[0])
                summary.sampled += 1
                next_sample = (moment if next_sample is None else next_sample) + rate.sample_seconds
                while next_sample <= moment:  # the source jumped ahead (dropped frames): keep the grid
                    next_sample += rate.sample_seconds
                if featuriser.ready and (next_prediction is None or moment >= next_prediction - 1e-9):
                    probabilities = featuriser.classify_ring()
                    latest = top_classes(probabilities, featuriser.classes, top)
                    prediction = LivePrediction(moment, time.perf_counter() - arrived, latest)
                    summary.predictions += 1
                    summary.latencies.append(prediction.latency)
                    # On the stride's grid (k x stride from the first): `moment + stride` would make a sample
                    # landing just before the next time wait a whole sample more, and every delay would add up.
                    first_prediction = moment if first_prediction is None else first_prediction
                    next_prediction = first_prediction + (math.floor((moment - first_prediction) / stride + 1e-9) + 1) * stride
                    before_first.clear()
                    emit(prediction)
            if out is not None:
                out.write(image, latest)
            if display and _show(image, latest):
                summary.ended, summary.reason = "quit", "q pressed"
                break
        if summary.predictions == 0 and before_first and summary.ended in ("end", "dropped", "stalled"):
            # Shorter than one window: the whole source is the window, as `predict` samples a clip.
            chosen = uniform_frame_indices(len(before_first), featuriser.steps)
            sequence = featuriser.featurise(np.stack([before_first[i] for i in chosen.tolist()]))
            latest = top_classes(featuriser.classify(sequence), featuriser.classes, top)
            prediction = LivePrediction(summary.last_time, time.perf_counter() - arrived, latest)
            summary.predictions += 1
            summary.latencies.append(prediction.latency)
            emit(prediction)
        completed = True
    except KeyboardInterrupt:
        summary.ended, summary.reason = "interrupted", f"interrupted ({interrupts.how()})"
        completed = True
    finally:
        stop.set()
        if display:
            import cv2

            cv2.destroyAllWindows()
        if out is not None:
            # What was shown up to the stop is a whole video; after an unexpected error nothing is kept. A
            # second Ctrl-C or SIGTERM waits until the file is whole.
            with interrupts.deferred(then_raise=False):
                out.finish() if completed else out.discard()
        if reader.is_alive():  # its capture is released as it ends; OpenCV torn down mid-read can abort
            with interrupts.deferred(then_raise=False):
                reader.join(timeout=2.0)
    return summary


def _show(image: np.ndarray, top) -> bool:
    """Show the annotated frame; True when q was pressed."""
    import cv2

    cv2.imshow("ucfpipe live", annotate(image, top))
    return (cv2.waitKey(1) & 0xFF) == ord("q")
