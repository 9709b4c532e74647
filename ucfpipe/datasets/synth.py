"""A small synthetic video dataset laid out exactly like UCF-101, whose classes only temporal order separates.

`generate_dataset(out_dir)` writes, in seconds and reproducibly from a seed:

    out_dir/UCF-101/<ClassName>/v_<ClassName>_gGG_cCC.avi
    out_dir/ucfTrainTestlist/classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt   (CRLF, official format)

so every tool that reads the real dataset reads this one unchanged. It is the README demo's input and the
tests' main fixture.

The classes and how one clip is drawn: `synth_render.py` (DEFAULT_CLASSES, render_clip, re-exported
here). This module writes them: videos, then the official-format split lists.

Codec: MPEG-4 Part 2 through OpenCV's FFmpeg backend with fourcc 'XVID', as real UCF-101 (the container
then carries the tag 'FMP4', which every decoder reads). Where an OpenCV build cannot write and read back
XVID, 'MJPG' is used instead; `video_fourcc()` tells which, and the summary reports it. Every file is read
back after writing and must decode exactly the intended number of frames. (MPEG-4's inter-frame coding is the
one thing not symmetric in time: the same frames coded forwards or backwards decode ~2 grey levels apart
per pixel, like the noise, and ~0.1 apart in frame mean, far below the classes' changes.)
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ucfpipe.core.errors import UcfpipeError  # noqa: E402
from ucfpipe.core.files import replacing, write_bytes  # noqa: E402
from ucfpipe.datasets.synth_render import DEFAULT_CLASSES, clip_num_frames, render_clip  # noqa: E402,F401

VIDEOS_DIR = "UCF-101"
SPLITS_DIR = "ucfTrainTestlist"
NUM_SPLITS = 3


# ------------------------------------------------------------------------------------------------ writing


def _encode(path: Path, frames: np.ndarray, fourcc: str, fps: float) -> None:
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    try:
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot open a {fourcc} video writer for {path}")
        for frame in frames:
            writer.write(np.ascontiguousarray(frame))
    finally:
        writer.release()


def _decoded_shape(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) as decoding finds them: the container's frame count is not trusted."""
    from ucfpipe.video.decode import decoded_frames

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0, 0, 0
        count = sum(1 for _ in decoded_frames(capture, wanted=()))  # counted as stage one counts
        return count, int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()


@functools.lru_cache(maxsize=None)
def video_fourcc() -> str:
    """'XVID' if this OpenCV build writes MPEG-4 AVIs it can read back frame-exactly, else 'MJPG'."""
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 48, 64, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory(prefix="ucfpipe-codec-") as tmp:
        for fourcc in ("XVID", "MJPG"):
            path = Path(tmp) / f"probe_{fourcc}.avi"
            try:
                _encode(path, frames, fourcc, 25.0)
            except RuntimeError:
                continue
            if _decoded_shape(path) == (5, 64, 48):
                return fourcc
    raise RuntimeError("this OpenCV build can write neither XVID nor MJPG AVI files (is its FFmpeg backend missing?)")


def _write_video(path: Path, frames: np.ndarray, fourcc: str, fps: float) -> None:
    """Encode to a temporary name beside `path`, check it decodes fully, then rename: an interrupted run never
    leaves a truncated video under a name that the split lists point at. The temporary name ends in .avi
    because FFmpeg picks the container from the extension, and starts with '.' so it never matches v_*.avi."""
    # Not mkstemp: its 0600 mode would survive the rename.
    with replacing(path, keep_suffix=True, durable=False) as tmp:
        _encode(tmp, frames, fourcc, fps)
        expected = (len(frames), frames.shape[2], frames.shape[1])
        found = _decoded_shape(tmp)
        if found != expected:
            raise RuntimeError(
                f"{path}: wrote {expected[0]} frames of {expected[1]}x{expected[2]} with {fourcc}, "
                f"but reading back gives {found[0]} frames of {found[1]}x{found[2]}"
            )


def _write_text(path: Path, lines: list[str]) -> None:
    """CRLF lines, as the official split files; written whole then renamed, like the videos."""
    write_bytes(path, "".join(line + "\r\n" for line in lines).encode("ascii"))


def split_blocks(num_groups: int) -> list[list[int]]:
    """Groups 1..num_groups cut into 3 contiguous, near-equal blocks; split s tests on block s (the official
    lists likewise test on g01-07, g08-14, g15-21)."""
    return [[int(g) for g in block] for block in np.array_split(np.arange(1, num_groups + 1), NUM_SPLITS)]


def _validate(num_classes, num_groups, clips_per_group, frame_size, min_frames, max_frames, fps, seed) -> None:
    def is_int(value) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not is_int(num_classes) or num_classes % 2 or not 2 <= num_classes <= len(DEFAULT_CLASSES):
        raise ValueError(
            f"num_classes must be an even number from 2 to {len(DEFAULT_CLASSES)} (classes come in time-reversed "
            f"pairs), got {num_classes!r}"
        )
    if not is_int(num_groups) or num_groups < NUM_SPLITS:
        raise ValueError(
            f"num_groups must be an integer >= {NUM_SPLITS}: each of the {NUM_SPLITS} splits tests on its own "
            f"block of groups, got {num_groups!r}"
        )
    if num_groups > 99:
        raise ValueError(f"num_groups must be at most 99 (gGG has two digits), got {num_groups!r}")
    if not is_int(clips_per_group) or not 1 <= clips_per_group <= 99:
        raise ValueError(
            f"clips_per_group must be an integer from 1 to 99 (cCC has two digits), got {clips_per_group!r}"
        )
    if not is_int(min_frames) or min_frames < 1:
        raise ValueError(f"min_frames must be an integer >= 1, got {min_frames!r}")
    if not is_int(max_frames) or max_frames < min_frames:
        raise ValueError(f"max_frames must be an integer >= min_frames ({min_frames}), got {max_frames!r}")
    try:
        width, height = frame_size
    except (TypeError, ValueError):
        raise ValueError(f"frame_size must be (width, height), got {frame_size!r}") from None
    if not (is_int(width) and is_int(height)) or width < 16 or height < 16 or width % 2 or height % 2:
        # Odd sizes would be cropped silently by the MPEG-4 encoder.
        raise ValueError(f"frame_size must be two even integers >= 16 as (width, height), got {frame_size!r}")
    if not isinstance(fps, (int, float, np.number)) or isinstance(fps, bool) or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _clear(root: Path, replace: bool) -> None:
    """A non-empty root is refused unless `replace`: then only its videos and lists go."""
    if root.is_dir() and any(root.iterdir()):
        if not replace:
            raise UcfpipeError(f"{root} is not empty: choose a new directory, or pass --replace to delete its "
                               f"{VIDEOS_DIR}/ and {SPLITS_DIR}/ and generate them again")
        for old in (root / VIDEOS_DIR, root / SPLITS_DIR):
            shutil.rmtree(old, ignore_errors=True)


def _write_lists(splits: Path, classes: list[str], clips: list[tuple[int, int, int]], num_groups: int) -> None:
    _write_text(splits / "classInd.txt", [f"{index} {name}" for index, name in enumerate(classes, 1)])
    for number, test_groups in enumerate(split_blocks(num_groups), 1):
        held_out = set(test_groups)
        _write_text(
            splits / f"trainlist{number:02d}.txt",
            [f"{_relative(classes, *c)} {c[0] + 1}" for c in clips if c[1] not in held_out],
        )
        _write_text(splits / f"testlist{number:02d}.txt", [_relative(classes, *c) for c in clips if c[1] in held_out])


def _relative(classes: list[str], label: int, group: int, clip: int) -> str:
    name = classes[label]
    return f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"


def generate_dataset(
    out_dir,
    *,
    num_classes: int = 6,
    num_groups: int = 6,
    clips_per_group: int = 3,
    frame_size: tuple[int, int] = (160, 120),
    min_frames: int = 24,
    max_frames: int = 64,
    fps: float = 25.0,
    seed: int = 0,
    replace: bool = False,
) -> dict:
    """Write the dataset under out_dir (see the module docstring) and return a summary:
    {"videos": str, "splits": str, "classes": [names], "num_clips": int, "fourcc": "XVID" or "MJPG"}.

    The classes are the first num_classes of DEFAULT_CLASSES (whole pairs); frame_size is (width, height).
    A non-empty out_dir is refused (a cache extracted from the old videos would mix with the new ones)
    unless `replace`: then its UCF-101/ and ucfTrainTestlist/ are deleted first, so no clip of an earlier,
    larger dataset stays behind; other files in out_dir are left alone."""
    _validate(num_classes, num_groups, clips_per_group, frame_size, min_frames, max_frames, fps, seed)
    root = Path(out_dir)
    videos, splits = root / VIDEOS_DIR, root / SPLITS_DIR
    _clear(root, replace)
    fourcc = video_fourcc()
    classes = list(DEFAULT_CLASSES[:num_classes])
    splits.mkdir(parents=True, exist_ok=True)
    for name in classes:
        (videos / name).mkdir(parents=True, exist_ok=True)
    # Sorted like the official lists: class index, then group, then clip.
    clips = [(label, group, clip) for label in range(num_classes) for group in range(1, num_groups + 1)
             for clip in range(1, clips_per_group + 1)]

    def make(item: tuple[int, int, int]) -> None:
        frames = render_clip(*item, frame_size=tuple(frame_size), min_frames=min_frames, max_frames=max_frames,
                             seed=seed)
        _write_video(videos / _relative(classes, *item), frames, fourcc, float(fps))

    # OpenCV releases the GIL while encoding and decoding, so threads overlap clips on several cores;
    # results do not depend on the order because each clip seeds its own generator.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for _ in pool.map(make, clips):
            pass
    _write_lists(splits, classes, clips, num_groups)
    return {"videos": str(videos), "splits": str(splits), "classes": classes, "num_clips": len(clips), "fourcc": fourcc}
