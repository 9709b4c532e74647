"""The synthetic dataset's classes and how one clip of them is drawn (`synth.py` writes the dataset).

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
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

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
