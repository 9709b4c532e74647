"""The official UCF-101 split files as a small pure API: classInd + train/test lists -> clips.

Everything else in ucfpipe names clips through this module. Conventions (as in MMAction2's
parse_file_list and PyTorchVideo's hmdb51):
- labels are 0-based, in classInd's order (not alphabetical `os.listdir` order);
- a clip's class comes from its folder, because the files themselves are not spelled consistently
  (`HandstandPushups/v_HandStandPushups_g01_c01.avi`);
- a clip's video id is its path without extension, `Class/v_Class_gGG_cCC`;
- the group `gGG` matters: clips of one group share actors and scene, so held-out sets hold out groups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import UcfpipeError

SPLITS = (1, 2, 3)
CLASS_INDEX_FILE = "classInd.txt"
_CLIP_NAME = re.compile(r"^v_(?P<name>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")


@dataclass(frozen=True, order=True)
class Clip:
    """One video of the dataset, as the split lists name it."""

    video_id: str  # "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01": path relative to the videos root, no extension
    label: int  # 0-based index into classInd
    group: int  # the gGG number: clips of one group share actors and background
    clip_number: int  # the cCC number within the group

    @property
    def class_name(self) -> str:
        return self.video_id.split("/", 1)[0]

    @property
    def relative_path(self) -> str:
        return self.video_id + ".avi"


@dataclass(frozen=True)
class Split:
    number: int
    classes: tuple[str, ...]
    train: tuple[Clip, ...]
    test: tuple[Clip, ...]

    def groups(self, part: str) -> set[int]:
        return {clip.group for clip in getattr(self, part)}


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines with their 1-based line numbers; CRLF/LF and a UTF-8 BOM are all accepted."""
    if not path.is_file():
        raise UcfpipeError(
            f"split file {path} not found: point --splits at the folder holding classInd.txt, "
            "trainlist0N.txt and testlist0N.txt (ucfTrainTestlist/ of UCF101TrainTestSplits-RecognitionTask.zip)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UcfpipeError(f"{path} is not a text file ({err.reason}): expected a UCF-101 split list") from None
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_classes(splits_dir: str | Path) -> tuple[str, ...]:
    """Class names in classInd order; position i is label i."""
    path = Path(splits_dir) / CLASS_INDEX_FILE
    names: list[str] = []
    for number, line in _read_lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise UcfpipeError(f"{path}:{number}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(fields[0]), fields[1]
        if index != len(names) + 1:
            raise UcfpipeError(
                f"{path}:{number}: class index {index} out of order, expected {len(names) + 1} (indices are 1, 2, 3, ...)"
            )
        if name in names:
            raise UcfpipeError(f"{path}:{number}: class {name!r} is listed twice")
        names.append(name)
    if not names:
        raise UcfpipeError(f"{path} lists no classes: expected lines like '1 ApplyEyeMakeup'")
    return tuple(names)


def parse_clip(relative_path: str, classes: tuple[str, ...], where: str = "clip path") -> Clip:
    """`Class/v_Class_gGG_cCC.avi` -> Clip, with the label taken from the folder's classInd position."""
    path = PurePosixPath(relative_path.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 2:
        raise UcfpipeError(
            f"{where}: {relative_path!r} must be 'ClassName/v_ClassName_gGG_cCC.avi' inside the dataset root"
        )
    folder, filename = path.parts
    if folder not in classes:
        raise UcfpipeError(f"{where}: class folder {folder!r} is not in classInd.txt; check the split files match")
    match = _CLIP_NAME.match(filename)
    if match is None:
        raise UcfpipeError(f"{where}: file name {filename!r} is not of the form v_ClassName_gGG_cCC.avi")
    # The folder decides the class; the file's own spelling only has to agree up to case (HandStandPushups).
    if match["name"].lower() != folder.lower():
        raise UcfpipeError(f"{where}: file {filename!r} does not belong to folder {folder!r}")
    return Clip(
        video_id=str(path.with_suffix("")),
        label=classes.index(folder),
        group=int(match["group"]),
        clip_number=int(match["clip"]),
    )


def _read_list(path: Path, classes: tuple[str, ...], labelled: bool) -> tuple[Clip, ...]:
    clips: list[Clip] = []
    seen: set[str] = set()
    for number, line in _read_lines(path):
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != (2 if labelled else 1):
            expected = "'<Class>/<file>.avi <label>'" if labelled else "'<Class>/<file>.avi'"
            raise UcfpipeError(f"{where}: expected {expected}, got {line!r}")
        clip = parse_clip(fields[0], classes, where)
        if labelled:
            if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(classes):
                raise UcfpipeError(f"{where}: label {fields[1]!r} is not a classInd index 1..{len(classes)}")
            if int(fields[1]) - 1 != clip.label:
                raise UcfpipeError(
                    f"{where}: label {fields[1]} ({classes[int(fields[1]) - 1]}) disagrees with folder "
                    f"{clip.class_name!r} (index {clip.label + 1} in classInd.txt)"
                )
        if clip.video_id in seen:
            raise UcfpipeError(f"{where}: {fields[0]} is listed twice")
        seen.add(clip.video_id)
        clips.append(clip)
    if not clips:
        raise UcfpipeError(f"{path} lists no clips")
    return tuple(clips)


def read_split(splits_dir: str | Path, number: int, classes: tuple[str, ...] | None = None) -> Split:
    """The official split `number` (1, 2 or 3). Train and test must not share a group."""
    if number not in SPLITS:
        raise UcfpipeError(f"split must be one of 1, 2, 3, got {number}")
    splits_dir = Path(splits_dir)
    classes = classes or read_classes(splits_dir)
    train = _read_list(splits_dir / f"trainlist0{number}.txt", classes, labelled=True)
    test = _read_list(splits_dir / f"testlist0{number}.txt", classes, labelled=False)
    split = Split(number, classes, train, test)
    shared = split.groups("train") & split.groups("test")
    if shared:
        raise UcfpipeError(
            f"split {number}: train and test share groups {sorted(shared)}; the lists in {splits_dir} are not a valid split"
        )
    overlap = {c.video_id for c in train} & {c.video_id for c in test}
    if overlap:
        raise UcfpipeError(f"split {number}: {len(overlap)} clips are in both lists, e.g. {sorted(overlap)[0]}")
    return split


def read_all_splits(splits_dir: str | Path) -> list[Split]:
    classes = read_classes(splits_dir)
    return [read_split(splits_dir, number, classes) for number in SPLITS]


def all_clips(splits_dir: str | Path) -> tuple[Clip, ...]:
    """Every clip named by any split list, once, sorted by video id: what stage one extracts."""
    clips = {clip.video_id: clip for split in read_all_splits(splits_dir) for clip in split.train + split.test}
    return tuple(clips[video_id] for video_id in sorted(clips))


def missing_on_disk(clips, videos_dir: str | Path) -> list[Clip]:
    """Listed clips with no file under the videos root (a partial download is a normal case)."""
    videos_dir = Path(videos_dir)
    if not videos_dir.is_dir():
        raise UcfpipeError(f"videos folder {videos_dir} does not exist: point --videos at the UCF-101/ folder")
    present = {str(p.relative_to(videos_dir).with_suffix("")) for p in videos_dir.glob("*/*.avi")}
    return [clip for clip in clips if clip.video_id not in present]


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
