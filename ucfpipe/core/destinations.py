"""Where a write goes, checked before any work: only a regular file is ever replaced. A symlink is followed (the
link stays, the file it points to is replaced whole), a character device, FIFO or socket is written to in place
(`/dev/null` stays a device, `/dev/stdout` works), `-` is standard output, and a folder or anything else is
refused in one line naming the flag the user gave (`output(path, "--html")`). `core/files.py` writes what this
module allows.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from ucfpipe.core.errors import UcfpipeError

STDOUT = "-"  # where a command writes one named file, `-` is standard output

KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISFIFO, "a FIFO"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a file"),
         (stat.S_ISLNK, "a link to nothing"))


def _in_place(mode: int) -> bool:
    """What a rename would destroy but a write reaches: a character device, a FIFO, a socket."""
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a file")


class Output(NamedTuple):
    """A write of `path` (as the user gave it) goes to `target`: the regular file to replace (links resolved),
    or, when `direct`, the device, FIFO, socket or standard output (`-`) written in place."""

    path: Path
    target: Path
    direct: bool
    descriptor: int | None = None  # /dev/stdout, /dev/fd/N: this process's own descriptor, written through it


def _who(path, flag: str | None) -> tuple[str, str]:
    """How a refusal names the output, and the end of its line (how to fix it)."""
    return (f"{flag} {path}", f"pass another {flag}") if flag else (str(path), "write elsewhere")


def folder_problem(folder: Path) -> str:
    """Why no file can be created in `folder`, or "" when one can (root ignores permissions, not a read-only
    mount: os.access says so for both)."""
    if not folder.exists():
        return f"folder {folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is {kind(folder.stat().st_mode)}, not a folder"
    if os.access(folder, os.W_OK | os.X_OK):
        return ""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"folder {folder} is {'on a read-only file system' if read_only else 'not writable by this user'}"


def how_to_fix(problem: str, fix: str) -> str:
    return f"create the folder or {fix}" if problem.endswith("does not exist") else (
        f"make it writable or {fix}" if "writable" in problem or "read-only" in problem else fix)


def output(path: str | Path, flag: str | None = None, *, stdout: bool = True, in_place: bool = True) -> Output:
    """Where a write of `path` goes, or one line (UcfpipeError) saying why it cannot: a folder, a block device,
    a missing or read-only folder, `-` where standard output is not allowed (`stdout=False`), a device or FIFO
    where only a regular file will do (`in_place=False`: files are written beside it). `flag` names the option
    in that line. Commands call it before any work; `replacing` calls it again when it writes."""
    who, fix = _who(path, flag)
    if str(path) == STDOUT:
        if not stdout:
            raise UcfpipeError(f"{flag or 'this output'} cannot be - (standard output) here: the command prints "
                               "its own results there; pass a file name")
        return Output(Path(STDOUT), Path(STDOUT), True)
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows links, /dev/stdout's /proc/self/fd/1 included
    except FileNotFoundError:
        mode = None
    except OSError as err:  # a loop of links, a folder on the way that is a file, no permission to look
        raise UcfpipeError(f"{who}: {err.strerror}; {fix}") from None
    if mode is None:  # nothing there, or a link to nothing: the file it names is created
        target = Path(os.path.realpath(path)) if os.path.islink(path) else path
        problem = folder_problem(target.parent)
        if problem:
            link = f" is a link to {target}, and its" if target != path else ":"
            raise UcfpipeError(f"{who}{link} {problem}; {how_to_fix(problem, fix)}")
        return Output(path, target, False)
    descriptor = _descriptor(path)
    if descriptor is not None and in_place and (stat.S_ISREG(mode) or _in_place(mode)):
        # /dev/stdout and the like: through the descriptor itself, so a file behind it (`> page.html`) gets the
        # bytes where the process is (a rename would take the file away from under the shell's redirection)
        return Output(path, path, True, descriptor if descriptor >= 0 else None)
    if stat.S_ISREG(mode):
        target = Path(os.path.realpath(path))
        problem = folder_problem(target.parent)
        if problem:
            raise UcfpipeError(f"{who}: {problem}; it is replaced through a new file there; {how_to_fix(problem, fix)}")
        return Output(path, target, False)
    if _in_place(mode) and not in_place:
        raise UcfpipeError(f"{who} is {kind(mode)}, not a file, and files are written beside it; {fix}")
    if _in_place(mode):
        if not os.access(path, os.W_OK):
            raise UcfpipeError(f"{who} is {kind(mode)} this user cannot write to; {fix}")
        return Output(path, path, True)
    what = "name a file in it" if stat.S_ISDIR(mode) else "name a file"
    raise UcfpipeError(f"{who} is {kind(mode)}, not a file; {what} or {fix}")


def _descriptor(path: Path) -> int | None:
    """The descriptor of this process that `path` names through /proc (/dev/stdout, /dev/fd/N, /proc/self/fd/N);
    -1 for another file under /proc; None for a path elsewhere."""
    name = str(path)
    for _ in range(40):
        folder = os.path.realpath(os.path.dirname(name) or ".")
        if folder.startswith("/proc/"):
            own = re.fullmatch(rf"/proc/{os.getpid()}(/task/\d+)?/fd", folder)
            return int(os.path.basename(name)) if own and os.path.basename(name).isdigit() else -1
        if not os.path.islink(name):
            return None
        name = os.path.join(os.path.dirname(name), os.readlink(name))
    return None


def output_dir(out: str | Path, flag: str | None = None) -> None:
    """The same refusals for an output that is a new folder (export --out, predict --out): it must be a folder
    (a link to one counts) or not exist yet, under a folder this user can write in."""
    who, fix = _who(out, flag)
    out = Path(os.path.realpath(out)) if os.path.islink(out) else Path(out)
    if out.exists():
        mode = out.stat().st_mode
        if not stat.S_ISDIR(mode):
            raise UcfpipeError(f"{who} is {kind(mode)}, not a folder; {fix}")
        return
    parent = out.parent
    while not parent.exists() and not os.path.islink(parent) and parent != parent.parent:
        parent = parent.parent
    problem = folder_problem(parent)
    if problem:
        raise UcfpipeError(f"{who}: {problem}; {how_to_fix(problem, fix)}")
