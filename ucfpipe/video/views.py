"""Views of a clip stored side by side in the cache: data augmentation and test-time augmentation.

A view is a way to turn the decoded clip into T frames: where in each of the T segments to sample
(temporal shift), which part of the frame to keep (the whole frame, or one of five crops of a slightly
larger resize, the classic "resize to 256, crop 224"), and whether to mirror it. "center" is the plain
view, always first: single-view training and evaluation use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import UcfpipeError

CROP_SCALE = 256 / 224  # crops come from a resize this much larger than the output size


@dataclass(frozen=True)
class View:
    name: str
    offset: float = 0.5  # relative position of the sampled frame within each of the T segments
    crop: str | None = None  # None: the whole frame; else "center", "tl", "tr", "bl", "br"
    flip: bool = False  # mirror left-right


VIEWS = {
    view.name: view
    for view in (
        View("center"),
        View("flip", flip=True),
        View("crop_center", crop="center"),
        View("crop_tl", crop="tl"),
        View("crop_tr", crop="tr"),
        View("crop_bl", crop="bl"),
        View("crop_br", crop="br"),
        View("time_early", offset=0.25),
        View("time_late", offset=0.75),
    )
}
PRESETS = {
    "all": list(VIEWS),
    "flip": ["center", "flip"],
    "crops": ["center", "crop_center", "crop_tl", "crop_tr", "crop_bl", "crop_br"],
    "time": ["center", "time_early", "time_late"],
}


def parse_views(spec: str) -> tuple[str, ...]:
    """'center,flip,time' -> ('center', 'flip', 'time_early', 'time_late'): names and presets, deduplicated,
    'center' first."""
    names: list[str] = ["center"]
    for item in comma_list(spec, "--views", empty_ok=True):
        if item in PRESETS:
            names += PRESETS[item]
        elif item in VIEWS:
            names.append(item)
        else:
            raise UcfpipeError(
                f"unknown view {item!r}; choose from {', '.join(VIEWS)} or the presets {', '.join(PRESETS)}"
            )
    return tuple(dict.fromkeys(names))


def crop_size(size: int) -> int:
    return int(round(size * CROP_SCALE))


def crop(image: np.ndarray, where: str, size: int) -> np.ndarray:
    """A size x size crop of `image` (larger than size) at the centre or a corner."""
    height, width = image.shape[:2]
    top = {"tl": 0, "tr": 0, "bl": height - size, "br": height - size, "center": (height - size) // 2}[where]
    left = {"tl": 0, "bl": 0, "tr": width - size, "br": width - size, "center": (width - size) // 2}[where]
    return image[top : top + size, left : left + size]


def render(view: View, whole: np.ndarray | None, larger: np.ndarray | None, size: int) -> np.ndarray:
    """One frame of `view` from the frame resized to size (`whole`) or to crop_size(size) (`larger`)."""
    image = whole if view.crop is None else crop(larger, view.crop, size)
    return np.ascontiguousarray(image[:, ::-1]) if view.flip else image
