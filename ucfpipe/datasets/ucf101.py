"""The official UCF-101 split files as a small pure API: classInd + train/test lists -> clips.

The `ucf101` entry of ucfpipe.datasets; the `folders` entry reads the same list format. Conventions (as in MMAction2's
parse_file_list and PyTorchVideo's hmdb51):
- labels are 0-based, in classInd's order (not alphabetical `os.listdir` order);
- a clip's class comes from its folder, because the files themselves are not spelled consistently
  (`HandstandPushups/v_HandStandPushups_g01_c01.avi`);
- a clip's video id is its path without extension, `Class/v_Class_gGG_cCC`;
- the group `gGG` matters: clips of one group share actors and scene, so held-out sets hold out groups.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets.base import Clip, Split, read_lines

LAYOUT = "--videos UCF-101/ (<Class>/v_<Class>_gGG_cCC.avi), --splits ucfTrainTestlist/ (classInd.txt, trainlist0N.txt, testlist0N.txt)"
SPLITS = (1, 2, 3)
CLASS_INDEX_FILE = "classInd.txt"
_LABEL_AT_END = re.compile(r"\s\d+$")  # a video's name ends in its extension, never in " 12"
_CLIP_NAME = re.compile(r"^v_(?P<name>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi$")


def _read_lines(path: Path) -> list[tuple[int, str]]:
    return read_lines(
        path, "a UCF-101 split list",
        "point --splits at the folder holding classInd.txt, trainlist0N.txt and testlist0N.txt "
        "(ucfTrainTestlist/ of UCF101TrainTestSplits-RecognitionTask.zip)",
    )


def read_classes(splits_dir: str | Path) -> tuple[str, ...]:
    """Class names in classInd order; position i is label i."""
    path = Path(splits_dir) / CLASS_INDEX_FILE
    names: list[str] = []
    for number, line in _read_lines(path):
        fields = line.split(None, 1)  # a class name may hold spaces (a folders dataset's "jump rope")
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


def _two_parts(relative_path: str) -> tuple[str, str]:
    """('Class', 'file.avi') of a listed 'Class/file.avi' (backslashes read as slashes), or ('', '') when it is not
    two parts inside the dataset root. Plain string work: a real list has 13,320 lines, read by every command."""
    text = relative_path.replace("\\", "/")
    folder, _, filename = text.partition("/")
    if folder not in ("", ".", "..") and filename not in ("", ".", "..") and "/" not in filename:
        return folder, filename
    path = PurePosixPath(text)  # the rare spellings: 'Class//file.avi', './Class/file.avi'
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 2:
        return "", ""
    return path.parts[0], path.parts[1]


def parse_clip(relative_path: str, classes: tuple[str, ...], where: str = "clip path") -> Clip:
    """`Class/v_Class_gGG_cCC.avi` -> Clip, with the label taken from the folder's classInd position."""
    folder, filename = _two_parts(relative_path)
    if not folder:
        raise UcfpipeError(
            f"{where}: {relative_path!r} must be 'ClassName/v_ClassName_gGG_cCC.avi' inside the dataset root"
        )
    if folder not in classes:
        raise UcfpipeError(f"{where}: class folder {folder!r} is not in classInd.txt; check the split files match")
    match = _CLIP_NAME.match(filename)
    if match is None:
        raise UcfpipeError(f"{where}: file name {filename!r} is not of the form v_ClassName_gGG_cCC.avi")
    # The folder decides the class; the file's own spelling only has to agree up to case (HandStandPushups).
    if match["name"].lower() != folder.lower():
        raise UcfpipeError(f"{where}: file {filename!r} does not belong to folder {folder!r}")
    return Clip(
        video_id=f"{folder}/{filename[:-len('.avi')]}",
        label=classes.index(folder),
        group=int(match["group"]),
        clip_number=int(match["clip"]),
        source=f"g{int(match['group']):02d}",
        listed_at=where,
    )


def _read_list(path: Path, classes: tuple[str, ...], labelled: bool, parse=None) -> tuple[Clip, ...]:
    """One train (labelled) or test list; `parse` turns a listed path into a Clip (the folders dataset passes
    its own: same list format, free file names)."""
    parse = parse or parse_clip
    clips: list[Clip] = []
    seen: set[str] = set()
    for number, line in _read_lines(path):
        # A training line ends with its label, so the name is everything before the last space; a test line is
        # the whole name. Names may hold spaces ("practice one.avi"): only the lines' ends are trimmed.
        fields = line.rsplit(None, 1) if labelled else [line]
        where = f"{path}:{number}"
        if len(fields) != (2 if labelled else 1) or not labelled and _LABEL_AT_END.search(line):
            expected = "'<Class>/<file>.avi <label>'" if labelled else "'<Class>/<file>.avi' (a test line has no label)"
            raise UcfpipeError(f"{where}: expected {expected}, got {line!r}")
        clip = parse(fields[0], classes, where)
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
    train, test = read_lists(splits_dir, number, classes)
    return Split(number, classes, train, test)  # Split refuses a clip or group on both sides


def read_lists(splits_dir: Path, number: int, classes: tuple[str, ...], parse=None) -> tuple[tuple[Clip, ...], tuple[Clip, ...]]:
    """(train, test) clips of trainlist0N.txt and testlist0N.txt."""
    train = _read_list(splits_dir / f"trainlist0{number}.txt", classes, labelled=True, parse=parse)
    test = _read_list(splits_dir / f"testlist0{number}.txt", classes, labelled=False, parse=parse)
    return train, test


def split_numbers(splits_dir: str | Path) -> tuple[int, ...]:
    return SPLITS


def read_all_splits(splits_dir: str | Path) -> list[Split]:
    classes = read_classes(splits_dir)
    return [read_split(splits_dir, number, classes) for number in SPLITS]


def all_clips(splits_dir: str | Path) -> tuple[Clip, ...]:
    """Every clip named by any split list, once, sorted by video id: what stage one extracts."""
    clips = {clip.video_id: clip for split in read_all_splits(splits_dir) for clip in split.train + split.test}
    return tuple(clips[video_id] for video_id in sorted(clips))
