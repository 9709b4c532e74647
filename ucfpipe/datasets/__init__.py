"""The dataset seam: which clips exist, their labels, groups and split membership, for any dataset.

Every stage names clips through this package. `DATASETS` is the whole table: one small module per dataset,
each with the same three functions,

    read_classes(splits_dir) -> class names, position i is label i
    split_numbers(splits_dir) -> the splits (folds) its split files define, e.g. (1, 2, 3)
    read_split(splits_dir, number, classes=None) -> Split (train / test / unused clips, and its hold-out rule)

and a one-line LAYOUT for help texts. A new dataset is one module and one entry here.
"""

from __future__ import annotations

from pathlib import Path

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import folders, hmdb51, ucf101
from ucfpipe.datasets.base import HOLDOUTS, Clip, Split, hold_out, hold_out_groups, missing_on_disk  # noqa: F401

DATASETS = {"ucf101": ucf101, "hmdb51": hmdb51, "folders": folders}
NAMES = tuple(DATASETS)
DEFAULT = "ucf101"


def get(name: str):
    if name not in DATASETS:
        raise UcfpipeError(f"unknown dataset {name!r}: choose one of {', '.join(NAMES)}")
    return DATASETS[name]


def of_cache(extract_config: dict) -> str:
    """The dataset a feature cache was extracted from; caches made before datasets existed are UCF-101's."""
    return extract_config.get("dataset", DEFAULT)


def read_split(name: str, splits_dir: str | Path, number: int) -> Split:
    return get(name).read_split(Path(splits_dir), number)


def read_all_splits(name: str, splits_dir: str | Path) -> list[Split]:
    dataset = get(name)
    classes = dataset.read_classes(Path(splits_dir))
    return [dataset.read_split(Path(splits_dir), number, classes) for number in dataset.split_numbers(Path(splits_dir))]


def all_clips(name: str, splits_dir: str | Path) -> tuple[Clip, ...]:
    """Every clip some split trains or tests on, once, sorted by video id: what stage one extracts. Each is
    named by the first list line that uses it."""
    clips: dict[str, Clip] = {}
    for split in read_all_splits(name, splits_dir):
        for clip in split.train + split.test:
            clips.setdefault(clip.video_id, clip)
    return tuple(clips[video_id] for video_id in sorted(clips))


def group_word(split: Split) -> str:
    """What a split's families are called: HMDB51's source films, everyone else's groups."""
    return "sources" if split.dataset == "hmdb51" else "groups"


def describe_groups(split: Split, part: str) -> str:
    """What holds `part`'s clips together, for `ucfpipe splits`: group ranges, a count of sources, or nothing."""
    if split.holdout == "groups":
        return _ranges(sorted(split.groups(part)))
    if split.holdout == "sources":
        named = len(split.sources(part) - {''})
        text = f"{named} {group_word(split) if named != 1 else group_word(split)[:-1]}"
        single = sum(not c.source for c in getattr(split, part))
        return text + (f" + {single} single clips" if single and split.dataset == "folders" else "")
    return "no groups"


def describe_holdout(split: Split) -> str:
    """How `train` takes validation clips out of this split's training list, in words (`--val-groups N`)."""
    if split.holdout == "groups":
        return "--val-groups whole groups (gNN) of the training list, drawn from the seed"
    if split.holdout == "sources":
        if split.dataset == "hmdb51":
            return "whole source films, until each class has about --val-groups validation clips"
        return ("whole gNN groups and single clips (files without a gNN), until each class has about --val-groups "
                "validation clips")
    return "--val-groups clips per class, drawn from the seed (no groups are known: each clip stands alone)"


def _ranges(numbers: list[int]) -> str:
    """[1,2,3,5] -> 'g01-g03,g05'"""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"g{start:02d}" if start == n else f"g{start:02d}-g{n:02d}")
            start = None
    return ",".join(parts)
