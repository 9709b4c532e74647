"""A user's own videos, `<root>/<class>/<any name>.<avi|mp4|mov|mkv|webm>`, with split lists in UCF-101's format.

`make_lists` writes the lists (`ucfpipe splits make`): classInd.txt, trainlist0N.txt and testlist0N.txt for
1-3 folds. They are plain text to read, edit and publish; every stage then reads them like UCF-101's, except
that file names and extensions are free.

Near-duplicates must not straddle train and test (nor train and validation). When every file name carries a
group, `gNN` between underscores as in UCF-101's `v_Class_g08_c01` (clips of one take, actor or scene), whole
groups go to one side; otherwise each clip is its own group and the cut is stratified by class.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from ..atomic import replacing_dir
from ..errors import UcfpipeError
from ..video import VIDEO_EXTENSIONS as EXTENSIONS
from . import ucf101
from .base import Clip, Split, number_groups

LAYOUT = "--videos ROOT (<class>/<name>.<avi|mp4|mov|mkv|webm>), --splits the folder `ucfpipe splits make` wrote"
GROUP_PATTERN = re.compile(r"(?:^|_)g(\d+)(?:_|$)", re.IGNORECASE)
MAX_FOLDS = 3
_MAKE = "make them with `ucfpipe splits make --videos ROOT --out DIR`"


def group_of(file_stem: str) -> int | None:
    match = GROUP_PATTERN.search(file_stem)
    return int(match[1]) if match else None


# -- reading the lists ---------------------------------------------------------------------------------------
def read_classes(splits_dir: str | Path) -> tuple[str, ...]:
    if not (Path(splits_dir) / ucf101.CLASS_INDEX_FILE).is_file():
        raise UcfpipeError(f"split file {Path(splits_dir) / ucf101.CLASS_INDEX_FILE} not found: {_MAKE}")
    return ucf101.read_classes(splits_dir)


def split_numbers(splits_dir: str | Path) -> tuple[int, ...]:
    numbers = tuple(n for n in range(1, MAX_FOLDS + 1) if (Path(splits_dir) / f"trainlist0{n}.txt").is_file())
    if not numbers:
        raise UcfpipeError(f"split file {Path(splits_dir) / 'trainlist01.txt'} not found: {_MAKE}")
    return numbers


def parse_clip(relative_path: str, classes: tuple[str, ...], where: str = "clip path") -> Clip:
    """`Class/<any name>.<ext>` -> Clip (group assigned later, from every list of the folder)."""
    path = PurePosixPath(relative_path.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 2:
        raise UcfpipeError(f"{where}: {relative_path!r} must be '<class>/<file>' inside the videos root")
    folder, filename = path.parts
    if folder not in classes:
        raise UcfpipeError(f"{where}: class folder {folder!r} is not in classInd.txt; check the split files match")
    if path.suffix.lower() not in EXTENSIONS:
        raise UcfpipeError(f"{where}: {filename!r} is not a {'/'.join(EXTENSIONS)} file; list video files only")
    return Clip(str(path.with_suffix("")), classes.index(folder), 0, extension=path.suffix, listed_at=where)


def read_split(splits_dir: str | Path, number: int, classes: tuple[str, ...] | None = None) -> Split:
    splits_dir = Path(splits_dir)
    classes = classes or read_classes(splits_dir)
    numbers = split_numbers(splits_dir)
    if number not in numbers:
        raise UcfpipeError(f"split {number} does not exist in {splits_dir}: its lists define folds "
                           f"{', '.join(map(str, numbers))}; pass one of them as --split")
    lists = {n: ucf101.read_lists(splits_dir, n, classes, parse=parse_clip) for n in numbers}
    every = [clip for train, test in lists.values() for clip in train + test]
    stems = {clip.video_id: PurePosixPath(clip.video_id).name for clip in every}
    if all(group_of(stem) is not None for stem in stems.values()):
        holdout, group = "groups", {v: group_of(stem) for v, stem in stems.items()}
    else:  # each clip its own group, numbered from every fold's clips so a clip keeps its number across folds
        holdout, group = "stratified", number_groups(list(stems))

    def grouped(clips):
        return tuple(Clip(c.video_id, c.label, group[c.video_id], 0, c.extension,
                          f"g{group[c.video_id]:02d}" if holdout == "groups" else "", c.listed_at) for c in clips)

    train, test = lists[number]
    return ucf101.checked(Split(number, classes, grouped(train), grouped(test), holdout, "folders"), splits_dir)


# -- making the lists ---------------------------------------------------------------------------------------
def scan(videos_root: Path) -> dict[str, list[str]]:
    """{class: sorted file names} of the videos under the root; hidden files and other extensions are ignored."""
    if not videos_root.is_dir():
        raise UcfpipeError(f"videos folder {videos_root} does not exist: point --videos at the folder holding one folder per class")
    found: dict[str, list[str]] = {}
    for folder in sorted(p for p in videos_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        names = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS)
        for name in [folder.name] + names:
            if len(name.split()) != 1 or name != name.strip():
                raise UcfpipeError(f"{folder / name if name in names else folder}: a name with spaces cannot be written "
                                   "to a split list (fields are separated by spaces); rename it")
        stems = [PurePosixPath(n).stem for n in names]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UcfpipeError(f"{folder}: {twice[0]!r} exists with two extensions; a clip is named by its path "
                               "without extension, so keep one file of that name")
        found[folder.name] = names
    if not found:
        raise UcfpipeError(f"no class folders under {videos_root}: expected <class>/<video>.<{'|'.join(e[1:] for e in EXTENSIONS)}>")
    return found


def _test_count(size: int, fraction: float) -> int:
    return max(1, round(fraction * size))


def _min_clips(folds: int, fraction: float) -> int:
    """Fewest clips a class needs for stratified folds: disjoint test parts, and two training clips (one may be
    held out for validation)."""
    return next(n for n in range(2, 10_000) if n - _test_count(n, fraction) >= 2 and folds * _test_count(n, fraction) <= n)


def plan_lists(videos_root: str | Path, folds: int = 1, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """{"classes", "mode", "folds": [(train paths, test paths), ...]} for the videos under the root. Pure: reads
    the folder names only."""
    if not 1 <= folds <= MAX_FOLDS:
        raise UcfpipeError(f"--folds must be 1, 2 or 3 (UCF-101's list format numbers folds 01-03), got {folds}")
    if seed < 0:
        raise UcfpipeError(f"--seed must be a non-negative integer, got {seed}")
    if not 0 < test_fraction < 1 or folds * test_fraction > 1:
        raise UcfpipeError(f"--test-fraction must be in (0, 1) and at most 1/folds = {1 / folds:.2f} so the "
                           f"folds' test parts do not overlap, got {test_fraction}")
    videos_root = Path(videos_root)
    found = scan(videos_root)
    classes = tuple(found)
    grouped = all(group_of(PurePosixPath(n).stem) is not None for names in found.values() for n in names)
    needed = 2 if grouped else _min_clips(folds, test_fraction)
    for class_name, names in found.items():
        if len(names) < needed:
            raise UcfpipeError(
                f"{videos_root / class_name}: {len(names)} video{'s' if len(names) != 1 else ''}, too few to split "
                f"into {folds} fold{'s' if folds > 1 else ''} at test fraction {test_fraction} (a class needs at least "
                f"{needed}); add videos to it or move the folder out of {videos_root}"
            )
    paths = {c: [f"{c}/{n}" for n in names] for c, names in found.items()}
    folds_out = []
    if grouped:
        groups = sorted({group_of(PurePosixPath(n).stem) for names in found.values() for n in names})
        count = _test_count(len(groups), test_fraction)
        if folds * count > len(groups) or count >= len(groups):
            raise UcfpipeError(f"the file names carry {len(groups)} groups, too few for {folds} folds testing on "
                               f"{count} each; lower --folds or --test-fraction, or add groups")
        order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
        for fold in range(folds):
            held = set(order[fold * count:(fold + 1) * count])
            train, test = [], []
            for class_name, listed in paths.items():
                is_test = [group_of(PurePosixPath(p).stem) in held for p in listed]
                if all(is_test) or not any(is_test):
                    raise UcfpipeError(
                        f"{videos_root / class_name}: fold {fold + 1} would test on {'all' if all(is_test) else 'none'} of its "
                        f"videos (its groups: {sorted({group_of(PurePosixPath(p).stem) for p in listed})}, test groups "
                        f"{sorted(held)}); add videos of other groups, or try another --seed or --test-fraction"
                    )
                train += [p for p, t in zip(listed, is_test) if not t]
                test += [p for p, t in zip(listed, is_test) if t]
            folds_out.append((sorted(train), sorted(test)))
    else:
        orders = {c: np.random.default_rng([seed, *c.encode()]).permutation(len(listed)) for c, listed in paths.items()}
        for fold in range(folds):
            train, test = [], []
            for class_name, listed in paths.items():
                count = _test_count(len(listed), test_fraction)
                held = set(orders[class_name][fold * count:(fold + 1) * count].tolist())
                train += [p for i, p in enumerate(listed) if i not in held]
                test += [p for i, p in enumerate(listed) if i in held]
            folds_out.append((sorted(train), sorted(test)))
    return {"classes": classes, "mode": "groups" if grouped else "stratified", "folds": folds_out}


def make_lists(videos_root: str | Path, out: str | Path, folds: int = 1, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """Write the lists of `plan_lists` into `out` (new or empty), all at once: on any error nothing is written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UcfpipeError(f"{out} already exists and is not an empty folder; pass a new --out (lists are never overwritten)")
    plan = plan_lists(videos_root, folds, test_fraction, seed)
    label = {c: i for i, c in enumerate(plan["classes"], 1)}
    with replacing_dir(out) as staging:
        (staging / ucf101.CLASS_INDEX_FILE).write_text("".join(f"{i} {c}\n" for c, i in label.items()))
        for number, (train, test) in enumerate(plan["folds"], 1):
            (staging / f"trainlist0{number}.txt").write_text("".join(f"{p} {label[p.split('/')[0]]}\n" for p in train))
            (staging / f"testlist0{number}.txt").write_text("".join(f"{p}\n" for p in test))
    return plan
