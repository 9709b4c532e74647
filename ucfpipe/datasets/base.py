"""What every dataset hands the stages: clips, splits, and how validation is held out of a training list.

A dataset entry (ucf101, hmdb51, folders) turns its own split files into these plain values; no stage reads
a file name itself. Pure functions of the lists and a seed: nothing here touches the videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe.core.errors import UcfpipeError

# How validation is held out of a training list, so that near-duplicates never straddle train and validation:
# - "groups": whole numbered groups (UCF-101's gGG: one group = same actors and scene), `val_groups` groups;
# - "sources": whole source videos (HMDB51 cuts several clips from one film) or whole groups of any size (a folders
#   dataset mixing `gNN` groups with single clips), until each class has about `val_groups` validation clips;
# - "stratified": no family is known, so `val_groups` clips per class, drawn at random from the seed.
# Files any stage treats as videos (a folder dataset, `predict DIR`): what OpenCV's FFmpeg reads everywhere.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".webm")
HOLDOUTS = ("groups", "sources", "stratified")


@dataclass(frozen=True, order=True)
class Clip:
    """One video of the dataset, as the split lists name it."""

    video_id: str  # "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01": path relative to the videos root, no extension
    label: int  # 0-based class index
    group: int  # clips sharing a group are near-duplicates (UCF-101's gGG, an HMDB51 source film); else unique
    clip_number: int = 0  # UCF-101's cCC number within the group; 0 where the dataset has none
    extension: str = ".avi"  # the file's real extension, as listed
    source: str = ""  # what `group` stands for, readable: "g08", "April_09"; "" when the clip is its own group
    listed_at: str = field(default="", compare=False)  # "file:line" of the list line naming it, for error messages

    @property
    def class_name(self) -> str:
        return self.video_id.split("/", 1)[0]

    @property
    def relative_path(self) -> str:
        return self.video_id + self.extension


@dataclass(frozen=True)
class Split:
    number: int
    classes: tuple[str, ...]
    train: tuple[Clip, ...]
    test: tuple[Clip, ...]
    holdout: str = "groups"  # one of HOLDOUTS: how `train` gives up its validation clips
    dataset: str = "ucf101"
    unused: tuple[Clip, ...] = ()  # listed but in neither part (HMDB51's id 0)

    def __post_init__(self):
        # Every dataset builds its splits here, and so do train, eval and finetune (through the dataset entry):
        # checking in the constructor means no split that tests on a trained clip can exist at all.
        refuse_leaks(self)

    def groups(self, part: str) -> set[int]:
        return {clip.group for clip in getattr(self, part)}

    def sources(self, part: str) -> set[str]:
        return {clip.source for clip in getattr(self, part)}

    def part_of(self, video_id: str) -> str | None:
        """"train", "test", "unused", or None when the split does not name the clip."""
        for part in ("train", "test", "unused"):
            if any(c.video_id == video_id for c in getattr(self, part)):
                return part
        return None


def _where(clip: Clip) -> str:
    return f"{clip.relative_path} ({clip.listed_at})" if clip.listed_at else clip.relative_path


def refuse_leaks(split: Split) -> None:
    """Refuse a split whose test part holds a clip, or a near-duplicate of a clip, that its training part holds:
    the same clip id (a clip is its path without extension, so `x.avi` and `x.mp4` of one class are one clip),
    or the same group (UCF-101's and folders' gNN, across all classes as the official lists keep them) or source
    (HMDB51's film, within one class: a film gives clips to several classes, and the official splits keep it on
    one side per class, not across classes)."""
    test_ids = {c.video_id: c for c in split.test}
    for part in ("train", "test"):
        seen: dict[str, Clip] = {}
        for clip in getattr(split, part):
            if clip.video_id in seen:
                raise UcfpipeError(
                    f"split {split.number}: {_where(seen[clip.video_id])} and {_where(clip)} are one clip "
                    f"{clip.video_id!r} (a clip is its path without extension); list one of them only, or rename one"
                )
            seen[clip.video_id] = clip
    for clip in split.train:
        if clip.video_id in test_ids:
            raise UcfpipeError(
                f"split {split.number}: clip {clip.video_id!r} is on both sides, train {_where(clip)} and test "
                f"{_where(test_ids[clip.video_id])} (a clip is its path without extension); list it on one side only, "
                "or rename one of the two files"
            )
    if split.holdout == "stratified":
        return  # each clip is its own group: the clip check above is the whole check
    per_class = split.dataset == "hmdb51"

    def key(clip):
        return (clip.label, clip.group) if per_class else clip.group

    test_groups = {key(c): c for c in split.test}
    for clip in split.train:
        if key(clip) in test_groups:
            other = test_groups[key(clip)]
            if per_class:
                what = f"source {clip.source!r} of class {clip.class_name!r}"
                fix = "give all of its clips one id in that file (all 1 or all 2)"
            else:
                what = f"group {clip.source or clip.group}"
                fix = "move all of that group's clips into one of the two lists"
            raise UcfpipeError(
                f"split {split.number}: {what} is on both sides, train {_where(clip)} and test {_where(other)}; "
                f"its clips are near-duplicates (same people and scene), so {fix}"
            )


def read_lines(path: Path, what: str, fix: str) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based line numbers; CRLF/LF and a UTF-8 BOM are all accepted."""
    if not path.is_file():
        raise UcfpipeError(f"split file {path} not found: {fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UcfpipeError(f"{path} is not a text file ({err.reason}): expected {what}") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def number_groups(keys: list[str]) -> dict[str, int]:
    """Stable 1-based group numbers for group keys (source names, clip ids): sorted order, so the same files
    give the same numbers on every machine and in every split."""
    return {key: number for number, key in enumerate(sorted(set(keys)), 1)}


# -- validation hold-out -------------------------------------------------------------------------------------
def hold_out_groups(groups, count: int, seed: int) -> list[int]:
    """`count` of the training list's groups held out for validation, drawn from `seed` alone (the same groups on
    every machine). Whole groups: clips of one group share actors and scene, so random clips would leak."""
    groups = sorted(set(int(g) for g in groups))
    if count >= len(groups):
        raise UcfpipeError(
            f"val_groups = {count} would leave no group to train on (the training list has {len(groups)} groups); "
            f"lower --val-groups to at most {len(groups) - 1}"
        )
    return sorted(int(g) for g in np.random.default_rng(seed).choice(groups, size=count, replace=False))


def _hold_out_sources(clips: list[Clip], count: int, seed: int) -> set[int]:
    """Whole source videos, in an order drawn from `seed`, until every class has about `count` validation clips.
    A source that would take a class's last training clip is skipped. A source may span classes, so it is
    held out everywhere at once: no source is ever on both sides."""
    by_group: dict[int, list[Clip]] = {}
    for clip in clips:
        by_group.setdefault(clip.group, []).append(clip)
    per_class = np.bincount([c.label for c in clips])
    held_per_class = np.zeros_like(per_class)
    held: set[int] = set()
    groups = sorted(by_group)
    for index in np.random.default_rng(seed).permutation(len(groups)):
        members = by_group[groups[index]]
        labels = np.bincount([c.label for c in members], minlength=len(per_class))
        wanted = (labels > 0) & (held_per_class < count)
        if wanted.any() and not ((held_per_class + labels >= per_class) & (labels > 0)).any():
            held.add(groups[index])
            held_per_class += labels
        if (held_per_class[per_class > 0] >= count).all():
            break
    if not held:
        raise UcfpipeError(
            f"no source video can be held out for validation without taking a class's last training clip "
            f"({len(groups)} sources, val_groups = {count}); the training list is too small to validate on"
        )
    return held


def _hold_out_stratified(clips: list[Clip], count: int, seed: int, classes: tuple[str, ...]) -> set[int]:
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for label in sorted({c.label for c in clips}):
        members = sorted((c for c in clips if c.label == label), key=lambda c: c.video_id)
        if count >= len(members):
            raise UcfpipeError(
                f"val_groups = {count} validation clips per class would leave class {classes[label]!r} no training "
                f"clip (it has {len(members)} in the training list); lower --val-groups to at most {len(members) - 1}"
            )
        held.update(members[i].group for i in rng.choice(len(members), size=count, replace=False))
    return held


def hold_out(split: Split, clips: list[Clip], count: int, seed: int) -> tuple[list[Clip], list[Clip], list[int]]:
    """(train, validation, held-out group numbers) of `clips` (the split's training clips at hand), by the split's
    own rule (`split.holdout`). Every rule holds out whole groups, so train and validation share none."""
    if split.holdout == "groups":
        held = set(hold_out_groups({c.group for c in clips}, count, seed))
    elif split.holdout == "sources":
        held = _hold_out_sources(clips, count, seed)
    else:
        held = _hold_out_stratified(clips, count, seed, split.classes)
    return [c for c in clips if c.group not in held], [c for c in clips if c.group in held], sorted(held)


def missing_on_disk(clips, videos_dir: str | Path) -> list[Clip]:
    """Listed clips with no file under the videos root (a partial download is a normal case)."""
    videos_dir = require_folder(videos_dir, "videos", "point --videos at the dataset's video root")
    present = {str(p.relative_to(videos_dir)).replace("\\", "/") for p in videos_dir.glob("*/*")}
    # One listing covers the usual <class>/<file> layout at once; a clip in a class's subfolder is looked up alone.
    return [clip for clip in clips if clip.relative_path not in present
            and not (clip.relative_path.count("/") > 1 and (videos_dir / clip.relative_path).is_file())]


def require_folder(path: str | Path, what: str, fix: str) -> Path:
    """`path` when it is a folder; else one line saying whether it is missing or a file."""
    path = Path(path)
    if not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "does not exist"
        raise UcfpipeError(f"{what} folder {path} {state}: {fix}")
    return path
