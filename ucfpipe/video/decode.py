"""Decoding and sampling: a video file -> T uint8 RGB frames spread uniformly over the whole clip.

No Keras here: this runs in decoding threads (OpenCV releases the GIL while it decodes).

Frame counts come from decoding, not from the container: AVI headers of real clips report wrong and even
negative counts. We sample with the container's count as a hint in one sequential pass, and only if
decoding finds a different count do we pass again with indices computed from the true count. Partly
decodable files follow one rule: a clip ends at its first frame that fails to decode.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # FFmpeg's per-frame warnings on damaged files are noise
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ucfpipe.core.errors import UcfpipeError  # noqa: E402
from ucfpipe.video.views import VIEWS, View, crop_size, render  # noqa: E402

# Part of the feature fingerprint: changing how frames are resized changes every feature.
RESIZE_METHOD = "cv2.INTER_AREA, whole frame to size x size (aspect ratio not kept)"
SAMPLING_METHOD = "centre frame of T equal segments of the decoded frames"


class VideoError(UcfpipeError):
    """One clip could not be read; extraction records it and goes on."""


@dataclass
class SampledClip:
    frames: np.ndarray  # (T, size, size, 3) uint8 RGB; (V, T, size, size, 3) from read_views
    frame_indices: np.ndarray  # (T,) int32 indices into the decoded frames; (V, T) from read_views
    num_frames: int  # frames decoding actually found
    fps: float


def uniform_frame_indices(num_frames: int, num_samples: int, offset: float = 0.5) -> np.ndarray:
    """`num_samples` indices spread uniformly over `num_frames`: the frame at relative position `offset`
    of each of `num_samples` equal segments. Short clips repeat indices, so every clip yields exactly T."""
    if num_frames < 1 or num_samples < 1:
        raise ValueError(f"need num_frames >= 1 and num_samples >= 1, got {num_frames}, {num_samples}")
    if not 0.0 <= offset < 1.0:
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    positions = (np.arange(num_samples) + offset) * (num_frames / num_samples)
    return np.minimum(positions.astype(np.int64), num_frames - 1).astype(np.int32)


def resize_rgb(frame_bgr: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's BGR frame -> size x size RGB (resized first: converting the smaller image is cheaper)."""
    resized = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: file is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open it (not a video, or damaged beyond its header)")
    return capture


def open_video(path: str | Path) -> cv2.VideoCapture:
    """An opened capture of a readable video file; VideoError (one line, why) otherwise."""
    return _open(Path(path))


def decoded_frames(capture: cv2.VideoCapture, wanted: Container[int] | None = None,
                   last: int | None = None) -> Iterator[tuple[int, np.ndarray | None]]:
    """The one decoding loop: (index, BGR frame) of each frame of `capture` in order, converted only where its
    index is in `wanted` (every frame when None; elsewhere None: decoded to be counted, never converted). It ends
    at the stream's end, after index `last`, or at a wanted frame that fails to decode: a clip ends at its first
    frame that fails to decode, whoever reads it."""
    index = 0
    while (last is None or index <= last) and capture.grab():
        frame = None
        if wanted is None or index in wanted:
            ok, frame = capture.retrieve()
            if not ok or frame is None or frame.ndim != 3:
                return
        yield index, frame
        index += 1


def _wanted(num_frames: int, num_samples: int, views: tuple[View, ...]) -> set[int]:
    return {i for offset in {v.offset for v in views} for i in uniform_frame_indices(num_frames, num_samples, offset).tolist()}


def _decode(path: Path, num_samples: int, size: int, views: tuple[View, ...], known_count: int = 0):
    """One sequential pass: every frame is decoded (to count them) but only the frames the views sample
    from `known_count` (else the container's count hint) are converted, once per output size. Returns
    {index: (whole, larger)}, the decoded frame count and the fps."""
    capture = _open(path)
    need_whole = any(v.crop is None for v in views)
    need_larger = any(v.crop is not None for v in views)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        basis = known_count or int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = _wanted(basis, num_samples, views) if basis > 0 else set()
        frames: dict[int, tuple] = {}
        count = 0
        for index, frame in decoded_frames(capture, wanted):
            count = index + 1
            if frame is not None:
                frames[index] = (resize_rgb(frame, size) if need_whole else None,
                                 resize_rgb(frame, crop_size(size)) if need_larger else None)
        return frames, count, fps
    finally:
        capture.release()


def count_frames(path: str | Path) -> tuple[int, int]:
    """(frames that decode, the way `read_views` counts them; the frame count the container claims), in one
    pass that converts no frame (fast: no CNN, no copies)."""
    capture = _open(Path(path))
    try:
        claimed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        return sum(1 for _ in decoded_frames(capture, wanted=())), claimed
    finally:
        capture.release()


def read_views(path: str | Path, num_samples: int, size: int, view_names=("center",)) -> SampledClip:
    """Decode `path` once and return every view's `num_samples` frames, spread uniformly over all of the
    clip's decodable frames: frames (V, T, size, size, 3), frame_indices (V, T)."""
    path = Path(path)
    views = tuple(VIEWS[name] for name in view_names)
    frames, count, fps = _decode(path, num_samples, size, views)
    if count == 0:
        raise VideoError(f"{path}: no decodable frames")
    if not _wanted(count, num_samples, views) <= frames.keys():
        # The container's count was wrong (or the clip ends early): sample again from the true count.
        frames, recount, _ = _decode(path, num_samples, size, views, known_count=count)
        if recount != count or not _wanted(count, num_samples, views) <= frames.keys():
            raise VideoError(f"{path}: decoding is not repeatable ({count} then {recount} frames)")
    indices = np.stack([uniform_frame_indices(count, num_samples, view.offset) for view in views])
    rendered = np.stack([
        np.stack([render(view, *frames[i], size) for i in view_indices]) for view, view_indices in zip(views, indices)
    ])
    return SampledClip(rendered, indices, count, fps)


def read_frames(path: str | Path, indices) -> dict[int, np.ndarray]:
    """{index: RGB frame} of the decoded frames at `indices` (counted as stage one counts them), in one pass
    that stops after the last of them (a report's thumbnails)."""
    wanted = {int(i) for i in indices}
    capture = _open(Path(path))
    try:
        return {index: cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                for index, frame in decoded_frames(capture, wanted, last=max(wanted, default=-1)) if frame is not None}
    finally:
        capture.release()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def read_image(path: str | Path, size: int) -> SampledClip:
    """An image file as a clip of one frame, resized and converted as every video frame is (`resize_rgb`)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: file not found")
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if frame is None:
        raise VideoError(f"{path}: OpenCV cannot read it as an image (damaged, or not {', '.join(IMAGE_EXTENSIONS)})")
    return SampledClip(resize_rgb(frame, size)[None], np.zeros(1, np.int32), 1, 0.0)


def read_clip(path: str | Path, num_samples: int, size: int) -> SampledClip:
    """The plain view only: frames (T, size, size, 3) uniformly spread over all decodable frames."""
    clip = read_views(path, num_samples, size)
    return SampledClip(clip.frames[0], clip.frame_indices[0], clip.num_frames, clip.fps)
