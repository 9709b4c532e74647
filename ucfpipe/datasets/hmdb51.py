"""HMDB51's official split files (testTrainMulti_7030_splits) as a small pure API.

One file per class and split, `<class>_test_split<N>.txt`, one line per video of the class:
`<video file name> <id>`, id 1 = training, 2 = testing, 0 = not used in this split (70 / 30 / the rest).
Videos live at `<root>/<class>/<video file name>`. Labels follow the sorted class names, or the order of a
`classInd.txt` ('<index> <class>' per line, as UCF-101's) when the splits folder holds one.

HMDB51 has no group numbers, but its file names start with the film or clip the video was cut from,
`<source>_<class>_<body>_<camera>_<people>_<view>_<quality>_<n>.avi` (`April_09_brush_hair_u_nm_np1_ba_goo_0.avi`:
source `April_09`). Clips of one source share actors and scene, so validation holds out whole sources; a name
that does not show its source makes that clip its own group, and with no source readable at all validation is
stratified by class.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import ucf101
from ucfpipe.datasets.base import Clip, Split, number_groups, read_lines

LAYOUT = "--videos hmdb51/ (<class>/<video>.avi), --splits testTrainMulti_7030_splits/ (<class>_test_split<N>.txt)"
PARTS = {"1": "train", "2": "test", "0": "unused"}
_SPLIT_FILE = re.compile(r"^(?P<class_name>.+)_test_split(?P<number>\d+)\.txt$")
# The meta tags after the action: visible body part, camera motion, people, viewpoint, quality, clip number.
_TAGS = r"[a-z]+_[a-z]+_np\d+_[a-z]+_[a-z]+_\d+"
_FIX = "point --splits at testTrainMulti_7030_splits/ (test_train_splits.rar of the HMDB51 site), whose files are <class>_test_split<N>.txt"


def _split_files(splits_dir: Path) -> dict[str, set[int]]:
    """{class: split numbers} of the split files in the folder."""
    if not splits_dir.is_dir():
        raise UcfpipeError(f"splits folder {splits_dir} does not exist: {_FIX}")
    found: dict[str, set[int]] = {}
    for path in splits_dir.iterdir():
        match = _SPLIT_FILE.match(path.name)
        if match:
            found.setdefault(match["class_name"], set()).add(int(match["number"]))
    if not found:
        raise UcfpipeError(f"no <class>_test_split<N>.txt files in {splits_dir}: {_FIX}")
    return found


def read_classes(splits_dir: str | Path) -> tuple[str, ...]:
    splits_dir = Path(splits_dir)
    named = sorted(_split_files(splits_dir))
    if not (splits_dir / ucf101.CLASS_INDEX_FILE).is_file():
        return tuple(named)
    classes = ucf101.read_classes(splits_dir)
    if sorted(classes) != named:
        raise UcfpipeError(
            f"{splits_dir / ucf101.CLASS_INDEX_FILE} lists other classes than the split files name "
            f"({len(classes)} vs {len(named)}, e.g. {sorted(set(classes) ^ set(named))[0]!r}); make them agree"
        )
    return classes


def split_numbers(splits_dir: str | Path) -> tuple[int, ...]:
    return tuple(sorted(set().union(*_split_files(Path(splits_dir)).values())))


def source_of(file_stem: str, class_name: str) -> str:
    """The film or clip a video was cut from, as its file name shows it; "" when the name does not follow HMDB51's."""
    match = re.match(rf"^(?P<source>.+)_{re.escape(class_name)}_{_TAGS}$", file_stem)
    return match["source"] if match else ""


def read_split(splits_dir: str | Path, number: int, classes: tuple[str, ...] | None = None) -> Split:
    splits_dir = Path(splits_dir)
    classes = classes or read_classes(splits_dir)
    listed: list[tuple[Clip, str]] = []
    for label, class_name in enumerate(classes):
        path = splits_dir / f"{class_name}_test_split{number}.txt"
        if not path.is_file():
            present = split_numbers(splits_dir)
            raise UcfpipeError(
                f"split file {path} not found: the folder has splits {', '.join(map(str, present))}; "
                f"pick one of them, or restore the missing file ({_FIX})"
            )
        seen: set[str] = set()
        for line_number, line in read_lines(path, "an HMDB51 split file", _FIX):
            where = f"{path}:{line_number}"
            fields = line.rsplit(None, 1)
            if len(fields) != 2:
                raise UcfpipeError(f"{where}: expected '<video file name> <id>', got {line!r}")
            name, part_id = fields
            if part_id not in PARTS:
                raise UcfpipeError(
                    f"{where}: id {part_id!r} must be 1 (train), 2 (test) or 0 (not used in this split); "
                    "fix the line or restore the official file"
                )
            stem, extension = PurePosixPath(name).stem, PurePosixPath(name).suffix
            if "/" in name or "\\" in name or not extension:
                raise UcfpipeError(f"{where}: {name!r} must be a video file name such as 'x_{class_name}_u_nm_np1_fr_goo_0.avi'")
            if name in seen:
                raise UcfpipeError(f"{where}: {name} is listed twice")
            seen.add(name)
            clip = Clip(f"{class_name}/{stem}", label, 0, extension=extension, source=source_of(stem, class_name),
                        listed_at=where)
            listed.append((clip, PARTS[part_id]))
    # Group numbers from every listed video (all of a class's videos are in each split's file), so a video
    # has the same group in every split. A clip whose source is unknown is a group of its own.
    keys = [clip.source or f"clip:{clip.video_id}" for clip, _ in listed]
    numbers = number_groups(keys)
    parts: dict[str, list[Clip]] = {"train": [], "test": [], "unused": []}
    for (clip, part), key in zip(listed, keys):
        parts[part].append(Clip(clip.video_id, clip.label, numbers[key], 0, clip.extension, clip.source, clip.listed_at))
    if not parts["train"] or not parts["test"]:
        raise UcfpipeError(f"split {number} in {splits_dir} has no {'training' if not parts['train'] else 'test'} video (id "
                           f"{'1' if not parts['train'] else '2'}); {_FIX}")
    holdout = "sources" if any(clip.source for clip, _ in listed) else "stratified"
    return Split(number, classes, tuple(parts["train"]), tuple(parts["test"]), holdout, "hmdb51", tuple(parts["unused"]))
