"""live --out: the frames with the latest top-3 drawn on them, recorded the one way files are written."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ucfpipe.core import interrupts
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.destinations import output
from ucfpipe.core.files import replacing

ANNOTATED_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# Free space below which a recording cannot go on, and a recording that does not read back ran out of it.
LOW_SPACE_BYTES = 1 << 20


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
