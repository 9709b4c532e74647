"""A small synthetic video dataset laid out exactly like UCF-101, whose classes only temporal order separates.

`generate_dataset(out_dir)` writes, in seconds and reproducibly from a seed:

    out_dir/UCF-101/<ClassName>/v_<ClassName>_gGG_cCC.avi
    out_dir/ucfTrainTestlist/classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt   (CRLF, official format)

so every tool that reads the real dataset reads this one unchanged. It is the README demo's input and the
tests' main fixture.

Why temporal order: classes come in pairs whose second member is the exact time-reversal of the first
(`GrowingDisk`/`ShrinkingDisk`, `FadingIn`/`FadingOut`, ...). A reversed clip is a forward clip, drawn with
its own random parameters, played backwards, so the *set* of frames of a class and of its partner follow the
same distribution. A model that ignores frame order (mean-pooled frame features, a single frame) can at
best tell the pairs apart, i.e. reach 1/2 accuracy within a pair; only a sequence model can separate the
members. The pairs whose change moves global image statistics most (object size, brightness, colour) come
first in DEFAULT_CLASSES, because the pipeline's features are globally average-pooled CNN activations, to
which a moving object is nearly invisible.

Each clip has nuisance so that it is not trivial: random background colour, object colour, size and
position, per-frame position jitter and pixel noise, and a random length in [min_frames, max_frames].
Its randomness derives only from (seed, class index, group, clip), so outputs are identical across runs
and do not depend on generation order or on how many classes/groups are generated.

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
from typing import Callable

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ucfpipe.core.errors import UcfpipeError  # noqa: E402
from ucfpipe.core.files import replacing, write_bytes  # noqa: E402

DEFAULT_CLASSES = (
    "GrowingDisk",
    "ShrinkingDisk",
    "FadingIn",
    "FadingOut",
    "RedToBlue",
    "BlueToRed",
    "FillingUp",
    "Draining",
    "MovingRight",
    "MovingLeft",
    "SpinningClockwise",
    "SpinningCounterclockwise",
)

VIDEOS_DIR = "UCF-101"
SPLITS_DIR = "ucfTrainTestlist"
NUM_SPLITS = 3
# Per-frame noise: +-NOISE_AMPLITUDE grey levels on a grid of NOISE_CELL pixels. Still visible after encoding
# (std ~2-3 grey levels) yet far below the temporal change of every class.
NOISE_AMPLITUDE = 10
NOISE_CELL = 8
_SHIFT = 4  # cv2 sub-pixel bits: sizes and positions change smoothly instead of in whole-pixel steps
_SCALE = 1 << _SHIFT


# --------------------------------------------------------------------------------------------- rendering
# A renderer draws one *forward* clip: (n, h, w, 3) uint8 BGR, before pixel noise. The change spans the
# whole clip whatever its length, so T frames sampled uniformly over any clip see all of it.


def _progress(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)


def _background(rng: np.random.Generator, low: int = 20, high: int = 236) -> np.ndarray:
    return rng.integers(low, high, size=3).astype(np.int64)


def _contrasting(rng: np.random.Generator, background: np.ndarray, min_distance: int = 90) -> np.ndarray:
    """A colour that differs from the background by at least min_distance in some channel: the object must
    stay visible (and measurable by tests) whatever the two random draws were."""
    while True:
        colour = rng.integers(0, 256, size=3).astype(np.int64)
        if np.abs(colour - background).max() >= min_distance:
            return colour


def _canvas(n: int, h: int, w: int, colour: np.ndarray) -> np.ndarray:
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[...] = colour.astype(np.uint8)
    return frames


def _jittered_centres(rng: np.random.Generator, n: int, w: int, h: int, spread: float = 0.1) -> np.ndarray:
    """A per-clip centre near the middle plus +-1 px per-frame shake, in cv2 fixed point."""
    centre = np.array([w / 2, h / 2]) + rng.uniform(-spread, spread, size=2) * np.array([w, h])
    shake = rng.uniform(-1.0, 1.0, size=(n, 2))
    return np.round((centre + shake) * _SCALE).astype(np.int64)


def _disk(frame: np.ndarray, centre_fp: np.ndarray, radius_px: float, colour: np.ndarray) -> None:
    cv2.circle(
        frame,
        (int(centre_fp[0]), int(centre_fp[1])),
        max(1, int(round(radius_px * _SCALE))),
        tuple(int(c) for c in colour),
        thickness=-1,
        lineType=cv2.LINE_AA,
        shift=_SHIFT,
    )


def _growing_disk(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    background = _background(rng)
    colour = _contrasting(rng, background)
    radii = np.interp(_progress(n), [0, 1], [rng.uniform(0.04, 0.10) * h, rng.uniform(0.40, 0.50) * h])
    centres = _jittered_centres(rng, n, w, h)
    frames = _canvas(n, h, w, background)
    for i in range(n):
        _disk(frames[i], centres[i], radii[i], colour)
    return frames


def _fading_in(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    # A bright scene so that the gain ramp moves mean brightness by ~100 grey levels or more.
    background = _background(rng, 110, 236)
    colour = _contrasting(rng, background, 60)
    radius = rng.uniform(0.2, 0.35) * h
    centres = _jittered_centres(rng, n, w, h, spread=0.15)
    frames = _canvas(n, h, w, background)
    for i in range(n):
        _disk(frames[i], centres[i], radius, colour)
    gains = np.interp(_progress(n), [0, 1], [rng.uniform(0.05, 0.2), rng.uniform(0.85, 1.0)])
    return (frames * gains[:, None, None, None].astype(np.float32)).round().astype(np.uint8)


def _red_to_blue(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    # Grey-ish background so the hue change of the large object dominates the frame's colour statistics.
    background = rng.integers(40, 200) + rng.integers(-15, 16, size=3)
    red = np.array([rng.integers(0, 60), rng.integers(0, 60), rng.integers(170, 256)])  # BGR
    blue = np.array([rng.integers(170, 256), rng.integers(0, 60), rng.integers(0, 60)])
    colours = np.round(red + _progress(n)[:, None] * (blue - red)).astype(np.int64)
    radius = rng.uniform(0.40, 0.50) * h
    centres = _jittered_centres(rng, n, w, h)
    frames = _canvas(n, h, w, background)
    for i in range(n):
        _disk(frames[i], centres[i], radius, colours[i])
    return frames


def _filling_up(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    background = _background(rng)
    colour = _contrasting(rng, background).astype(np.uint8)
    levels = np.interp(_progress(n), [0, 1], [rng.uniform(0.0, 0.1), rng.uniform(0.85, 1.0)]) * h
    levels = np.clip(np.round(levels + rng.uniform(-1.0, 1.0, size=n)), 0, h).astype(np.int64)
    frames = _canvas(n, h, w, background)
    rows = np.arange(h)[None, :]
    filled = rows >= (h - levels)[:, None]  # (n, h): liquid rises from the bottom
    frames[filled] = colour
    return frames


def _moving_right(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    background = _background(rng)
    colour = _contrasting(rng, background)
    radius = rng.uniform(0.18, 0.25) * h
    xs = np.interp(_progress(n), [0, 1], [rng.uniform(0.1, 0.2) * w, rng.uniform(0.8, 0.9) * w])
    y = h / 2 + rng.uniform(-0.15, 0.15) * h
    shake = rng.uniform(-1.0, 1.0, size=(n, 2))
    centres = np.round((np.stack([xs, np.full(n, y)], axis=1) + shake) * _SCALE).astype(np.int64)
    frames = _canvas(n, h, w, background)
    for i in range(n):
        _disk(frames[i], centres[i], radius, colour)
    return frames


def _spinning_clockwise(rng: np.random.Generator, n: int, w: int, h: int) -> np.ndarray:
    background = _background(rng)
    colour = tuple(int(c) for c in _contrasting(rng, background))
    half_length = rng.uniform(0.35, 0.45) * h
    thickness = max(2, int(round(rng.uniform(0.08, 0.14) * h)))
    start = rng.uniform(0, 2 * np.pi)
    # Under 360 degrees so a clip never returns to its first pose; image y points down, so an increasing
    # angle turns clockwise on screen.
    angles = start + _progress(n) * np.deg2rad(rng.uniform(180, 300))
    centres = _jittered_centres(rng, n, w, h, spread=0.05)
    frames = _canvas(n, h, w, background)
    for i in range(n):
        offset = half_length * np.array([np.cos(angles[i]), np.sin(angles[i])]) * _SCALE
        p1 = np.round(centres[i] - offset).astype(np.int64)
        p2 = np.round(centres[i] + offset).astype(np.int64)
        cv2.line(frames[i], (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), colour, thickness, cv2.LINE_AA, _SHIFT)
    return frames


# One forward renderer per pair, in DEFAULT_CLASSES order; the pair's second class plays it backwards.
_PAIR_RENDERERS: tuple[Callable[[np.random.Generator, int, int, int], np.ndarray], ...] = (
    _growing_disk,
    _fading_in,
    _red_to_blue,
    _filling_up,
    _moving_right,
    _spinning_clockwise,
)
assert len(_PAIR_RENDERERS) * 2 == len(DEFAULT_CLASSES)


def _clip_rng(class_index: int, group: int, clip: int, seed: int) -> np.random.Generator:
    # Seeded by the clip's identity alone: output does not depend on generation order or dataset size.
    return np.random.default_rng([seed, class_index, group, clip])


def clip_num_frames(
    class_index: int, group: int, clip: int, *, min_frames: int = 24, max_frames: int = 64, seed: int = 0
) -> int:
    """How many frames render_clip (and so the written video) has, without rendering it."""
    return int(_clip_rng(class_index, group, clip, seed).integers(min_frames, max_frames + 1))


def render_clip(
    class_index: int,
    group: int,
    clip: int,
    *,
    frame_size: tuple[int, int] = (160, 120),
    min_frames: int = 24,
    max_frames: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """The frames of one clip before encoding: (n, height, width, 3) uint8 BGR, n in [min_frames, max_frames].

    class_index is 0-based into DEFAULT_CLASSES; group and clip are the 1-based gGG and cCC numbers."""
    width, height = frame_size
    rng = _clip_rng(class_index, group, clip, seed)
    n = int(rng.integers(min_frames, max_frames + 1))  # first draw: clip_num_frames repeats it
    frames = _PAIR_RENDERERS[class_index // 2](rng, n, width, height)
    if class_index % 2:
        frames = frames[::-1]
    return np.clip(frames + _smooth_noise(rng, frames.shape), 0, 255).astype(np.uint8)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Fresh noise per frame, drawn on a coarse grid and upsampled bilinearly. Independent per-pixel noise would
    be almost entirely removed by the MPEG-4 encoder (its std drops from ~4 to ~0.5 grey levels); blotches of
    about a codec block survive encoding, like real sensor noise and lighting flicker do."""
    n, h, w, channels = shape
    grid_h, grid_w = -(-h // NOISE_CELL) + 1, -(-w // NOISE_CELL) + 1
    coarse = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(n, grid_h, grid_w, channels)).astype(np.float32)
    size = (grid_w * NOISE_CELL, grid_h * NOISE_CELL)
    return np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)[:h, :w] for frame in coarse])


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
    if root.is_dir() and any(root.iterdir()):
        if not replace:
            raise UcfpipeError(f"{root} is not empty: choose a new directory, or pass --replace to delete its "
                               f"{VIDEOS_DIR}/ and {SPLITS_DIR}/ and generate them again")
        for old in (videos, splits):
            shutil.rmtree(old, ignore_errors=True)
    fourcc = video_fourcc()
    classes = list(DEFAULT_CLASSES[:num_classes])
    splits.mkdir(parents=True, exist_ok=True)
    for name in classes:
        (videos / name).mkdir(parents=True, exist_ok=True)

    # Sorted like the official lists: class index, then group, then clip.
    clips = [
        (label, group, clip)
        for label in range(num_classes)
        for group in range(1, num_groups + 1)
        for clip in range(1, clips_per_group + 1)
    ]

    def relative(label: int, group: int, clip: int) -> str:
        name = classes[label]
        return f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"

    def make(item: tuple[int, int, int]) -> None:
        label, group, clip = item
        frames = render_clip(
            label, group, clip, frame_size=tuple(frame_size), min_frames=min_frames, max_frames=max_frames, seed=seed
        )
        _write_video(videos / relative(label, group, clip), frames, fourcc, float(fps))

    # OpenCV releases the GIL while encoding and decoding, so threads overlap clips on several cores;
    # results do not depend on the order because each clip seeds its own generator.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for _ in pool.map(make, clips):
            pass

    _write_text(splits / "classInd.txt", [f"{index} {name}" for index, name in enumerate(classes, 1)])
    for number, test_groups in enumerate(split_blocks(num_groups), 1):
        held_out = set(test_groups)
        _write_text(
            splits / f"trainlist{number:02d}.txt",
            [f"{relative(*c)} {c[0] + 1}" for c in clips if c[1] not in held_out],
        )
        _write_text(splits / f"testlist{number:02d}.txt", [relative(*c) for c in clips if c[1] in held_out])

    return {
        "videos": str(videos),
        "splits": str(splits),
        "classes": classes,
        "num_clips": len(clips),
        "fourcc": fourcc,
    }
