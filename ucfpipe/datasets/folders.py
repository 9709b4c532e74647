"""A user's own videos, `<root>/<class>/<any name>.<avi|mp4|mov|mkv|webm>`, with split lists in UCF-101's format.

`make_lists` writes the lists (`ucfpipe splits make`): classInd.txt, trainlist0N.txt and testlist0N.txt for
1-3 folds. They are plain UTF-8 text to read, edit and publish; every stage then reads them like UCF-101's, except
that file names and extensions are free: spaces, parentheses, `#` and any letters are written as they are (a
training line's label is after its last space, a test line is the whole name).

A video in a subfolder of a class folder (`<root>/dribble/2023 june/a.mp4`) belongs to the top-level class; its
clip id keeps the path (`dribble/2023 june/a`).

Near-duplicates must not straddle train and test (nor train and validation). A file whose name carries a group,
`gNN` between underscores as in UCF-101's `v_Class_g08_c01` (clips of one take, actor or scene), goes to the side
of its whole group; a file without one is a group of its own, and those are split stratified by class. Either
kind may be the whole dataset, or both may mix.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import replacing_dir
from ucfpipe.datasets import ucf101
from ucfpipe.datasets.base import VIDEO_EXTENSIONS as EXTENSIONS
from ucfpipe.datasets.base import Clip, Split, number_groups, require_folder

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
    """`Class/<any name>.<ext>` or `Class/<subfolders>/<any name>.<ext>` -> Clip (group assigned later, from every
    list of the folder)."""
    path = PurePosixPath(relative_path.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2:
        raise UcfpipeError(f"{where}: {relative_path!r} must be '<class>/<file>' inside the videos root")
    folder, filename = path.parts[0], path.name
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
    named = {v: group_of(stem) for v, stem in stems.items() if group_of(stem) is not None}
    # Each clip without a gNN is its own group, numbered after the highest gNN from every fold's clips, so a clip
    # keeps its number across folds. A mix holds out whole groups of either size until each class has validation
    # clips (as HMDB51's sources): a few gNN groups alone could leave a class without any.
    holdout = "groups" if len(named) == len(stems) else "stratified" if not named else "sources"
    offset = max(named.values(), default=0)
    group = {**{v: n + offset for v, n in number_groups([v for v in stems if v not in named]).items()}, **named}

    def grouped(clips):
        return tuple(Clip(c.video_id, c.label, group[c.video_id], 0, c.extension,
                          f"g{group[c.video_id]:02d}" if c.video_id in named else "", c.listed_at) for c in clips)

    train, test = lists[number]
    return Split(number, classes, grouped(train), grouped(test), holdout, "folders")


# -- making the lists ---------------------------------------------------------------------------------------
def scan(videos_root: Path) -> dict[str, list[str]]:
    """{class: sorted paths inside the class folder} of the videos under the root. Videos in subfolders of a class
    folder belong to it; hidden files and folders and other extensions are ignored."""
    videos_root = require_folder(videos_root, "videos", "point --videos at the folder holding one folder per class")
    found: dict[str, list[str]] = {}
    for folder in sorted(p for p in videos_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _check_name(folder.name, folder, is_class=True)
        names = sorted(str(p.relative_to(folder)).replace("\\", "/") for p in folder.rglob("*")
                       if p.suffix.lower() in EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        for name in names:
            _check_name(name, folder / name, is_class=False)
        stems = [str(PurePosixPath(n).with_suffix("")) for n in names]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise UcfpipeError(f"{folder}: {twice[0]!r} exists with two extensions; a clip is named by its path "
                               "without extension, so keep one file of that name")
        found[folder.name] = names
    if not found:
        raise UcfpipeError(f"no class folders under {videos_root}: expected <class>/<video>.<{'|'.join(e[1:] for e in EXTENSIONS)}>")
    return found


def _check_name(name: str, path: Path, is_class: bool) -> None:
    """A list line holds one name and is trimmed at both ends: a name may hold spaces, but no line break, and a
    class name (which starts a line) no space at either end."""
    if len(name.splitlines()) != 1 or any(ch in name for ch in "\r\n"):
        raise UcfpipeError(f"{str(path)!r}: a name with a line break cannot be written to a split list; rename it")
    if is_class and name != name.strip():
        raise UcfpipeError(f"{str(path)!r}: a class folder name that starts or ends with a space cannot be written to a "
                           "split list (its lines are trimmed); rename the folder")


def _stem(path: str) -> str:
    return PurePosixPath(path).stem


def _test_count(size: int, fraction: float) -> int:
    return max(1, round(fraction * size))


def _min_clips(folds: int, fraction: float) -> int:
    """Fewest clips a class needs for stratified folds: disjoint test parts, and two training clips (one may be
    held out for validation)."""
    return next(n for n in range(2, 10_000) if n - _test_count(n, fraction) >= 2 and folds * _test_count(n, fraction) <= n)


def _check_plan_settings(folds: int, test_fraction: float, seed: int) -> None:
    if not 1 <= folds <= MAX_FOLDS:
        raise UcfpipeError(f"--folds must be 1, 2 or 3 (UCF-101's list format numbers folds 01-03), got {folds}")
    if seed < 0:
        raise UcfpipeError(f"--seed must be a non-negative integer, got {seed}")
    if not 0 < test_fraction < 1 or folds * test_fraction > 1:
        raise UcfpipeError(f"--test-fraction must be in (0, 1) and at most 1/folds = {1 / folds:.2f} so the "
                           f"folds' test parts do not overlap, got {test_fraction}")


def _check_class_sizes(videos_root: Path, paths: dict, singles: dict, folds: int, test_fraction: float) -> None:
    for class_name, listed in paths.items():
        # A class of single clips only needs enough for disjoint stratified test parts; a class with gNN groups
        # gets its test clips from the test groups.
        needed = _min_clips(folds, test_fraction) if len(singles[class_name]) == len(listed) else 2
        if len(listed) < needed:
            raise UcfpipeError(
                f"{videos_root / class_name}: {len(listed)} video{'s' if len(listed) != 1 else ''}, too few to split "
                f"into {folds} fold{'s' if folds > 1 else ''} at test fraction {test_fraction} (a class needs at least "
                f"{needed}); add videos to it or move the folder out of {videos_root}"
            )


def _group_order(groups_of: dict, folds: int, test_fraction: float, seed: int) -> tuple[list, int]:
    """The named groups in a seeded random order, and how many each fold tests on (none named: [], 0)."""
    named = sorted({g for g in groups_of.values() if g is not None})
    if not named:
        return [], 0
    count = _test_count(len(named), test_fraction)
    if folds * count > len(named) or count >= len(named):
        with_group = sum(g is not None for g in groups_of.values())
        raise UcfpipeError(
            f"the file names carry {len(named)} group{'s' if len(named) != 1 else ''} (_gNN_, in {with_group} "
            f"files, e.g. {next(p for p, g in groups_of.items() if g is not None)}), too few for {folds} fold(s) "
            f"testing on {count} each; lower --folds or --test-fraction, add groups, or rename those files "
            "without _gNN_ so each is a group of its own")
    return [named[i] for i in np.random.default_rng(seed).permutation(len(named))], count


def _fold(videos_root: Path, fold: int, held: set, paths: dict, singles: dict, groups_of: dict, orders: dict,
          test_fraction: float) -> tuple[list, list]:
    """(train paths, test paths) of one fold: its held-out groups, and its share of each class's single clips."""
    train, test = [], []
    for class_name, listed in paths.items():
        alone = singles[class_name]
        # Stratified single clips: at least one per class when the class has nothing else to test on.
        k = _test_count(len(alone), test_fraction) if len(alone) == len(listed) else round(test_fraction * len(alone))
        held_alone = {alone[i] for i in orders[class_name][fold * k:(fold + 1) * k].tolist()}
        is_test = [groups_of[p] in held if groups_of[p] is not None else p in held_alone for p in listed]
        if all(is_test) or not any(is_test):
            class_groups = sorted({groups_of[p] for p in listed} - {None})
            raise UcfpipeError(
                f"{videos_root / class_name}: fold {fold + 1} would test on {'all' if all(is_test) else 'none'} of its "
                f"videos (its groups: {class_groups}, {len(alone)} without a group; test groups {sorted(held)}); "
                "add videos of other groups, or try another --seed or --test-fraction"
            )
        train += [p for p, t in zip(listed, is_test) if not t]
        test += [p for p, t in zip(listed, is_test) if t]
    return sorted(train), sorted(test)


def plan_lists(videos_root: str | Path, folds: int = 1, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """{"classes", "mode", "folds": [(train paths, test paths), ...], "grouped", "single", "nested"} for the videos
    under the root. mode: "groups" (every file name has a gNN), "stratified" (none has), "mixed"; then the counts
    of files with a group, without one, and in a class's subfolder. Pure: reads the folder names only."""
    _check_plan_settings(folds, test_fraction, seed)
    videos_root = Path(videos_root)
    found = scan(videos_root)
    paths = {c: [f"{c}/{n}" for n in names] for c, names in found.items()}
    groups_of = {p: group_of(_stem(p)) for listed in paths.values() for p in listed}
    singles = {c: [p for p in listed if groups_of[p] is None] for c, listed in paths.items()}
    _check_class_sizes(videos_root, paths, singles, folds, test_fraction)
    order, count = _group_order(groups_of, folds, test_fraction, seed)
    orders = {c: np.random.default_rng([seed, *c.encode()]).permutation(len(listed)) for c, listed in singles.items()}
    folds_out = [_fold(videos_root, fold, set(order[fold * count:(fold + 1) * count]), paths, singles, groups_of,
                       orders, test_fraction) for fold in range(folds)]
    with_group = sum(g is not None for g in groups_of.values())
    mode = "groups" if with_group == len(groups_of) else "stratified" if not with_group else "mixed"
    return {"classes": tuple(found), "mode": mode, "folds": folds_out, "grouped": with_group,
            "single": len(groups_of) - with_group, "nested": sum(p.count("/") > 1 for p in groups_of)}


def make_lists(videos_root: str | Path, out: str | Path, folds: int = 1, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """Write the lists of `plan_lists` into `out` (new or empty), all at once: on any error nothing is written."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UcfpipeError(f"{out} already exists and is not an empty folder; pass a new --out (lists are never overwritten)")
    plan = plan_lists(videos_root, folds, test_fraction, seed)
    label = {c: i for i, c in enumerate(plan["classes"], 1)}
    with replacing_dir(out) as staging:
        # UTF-8 whatever the locale: the lists are read as UTF-8 on every machine.
        (staging / ucf101.CLASS_INDEX_FILE).write_text("".join(f"{i} {c}\n" for c, i in label.items()), encoding="utf-8")
        for number, (train, test) in enumerate(plan["folds"], 1):
            (staging / f"trainlist0{number}.txt").write_text(
                "".join(f"{p} {label[p.split('/')[0]]}\n" for p in train), encoding="utf-8")
            (staging / f"testlist0{number}.txt").write_text("".join(f"{p}\n" for p in test), encoding="utf-8")
    return plan
