"""Live sources: a camera, a stream URL or a video file (`open_source`), as (time in seconds, BGR frame), and the
reader thread that hands their frames to live's loop through a small queue (`read_into`), so that a source
that stalls is noticed instead of blocking forever. Tests pass a generator where a source goes."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.queues import put_unless_stopped
# queue.get and OpenCV's timeouts overflow far below inf (threading.TIMEOUT_MAX is about 292 years, and a wait past
# it raised OverflowError, then the reader thread inside OpenCV aborted the interpreter): --stall is at most a day.
from ucfpipe.serving.windows import MAX_SECONDS
from ucfpipe.video.decode import VideoError, open_video


class SourceDropped(Exception):
    """A live source (camera, URL) stopped giving frames."""


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


END = object()  # what the reader thread hands over after the last frame


def read_into(source, frames: queue.Queue, stop: threading.Event) -> None:
    """The reader thread: (time, frame, arrival) into `frames`, then END or the exception that ended it.
    Every hand-over gives up once the main thread stopped, so the thread (and the capture it releases) ends."""

    def hand(item) -> bool:
        return put_unless_stopped(frames, item, stop)

    try:
        for moment, image in source:
            if not hand((float(moment), image, time.perf_counter())):
                return
        hand(END)
    except BaseException as err:  # handed to the main thread, which says so and stops
        hand(err)
