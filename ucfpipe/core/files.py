"""Files are written one way: under a temporary name beside the target, then renamed over it, so a reader (or a
rerun after a crash, Ctrl-C or a full disk) sees the old file or the new one, never half of one.

    with replacing(path, keep_suffix=True) as tmp:   # write tmp however you like (Keras, matplotlib, OpenCV)
        model.save(tmp)
    write_bytes(path, data) / write_text / write_json   # the same for data already in memory
    with replacing_dir(out) as staging: ...             # a whole new directory, renamed into place at the end

On any failure the temporary is removed and the target is as it was; a full disk becomes one line (`DiskFull`).

Only a regular file is ever replaced: where a write may go is `core/destinations.py`'s `output` (links followed,
devices and FIFOs written in place, `-` standard output), which commands ask for up front and `replacing` asks
again. Errors name the path the user gave, never the temporary.
"""

from __future__ import annotations

import csv
import errno
import gc
import io
import json
import os
import re
import shutil
import sys
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path

from ucfpipe.core.destinations import STDOUT, Output, folder_problem, how_to_fix, kind, output
from ucfpipe.core.errors import UcfpipeError

# The end of every full-disk line (train replaces it with how to resume).
RERUN = "free space and rerun the same command: what was written before is kept"


class DiskFull(UcfpipeError):
    """A write failed for want of space; the file it was replacing is untouched and no temporary is left."""


def _megabytes(count: float) -> str:
    return f"{count / 1e6:.1f} MB"


def disk_full(path: Path, needed: int | None = None) -> DiskFull:
    """The one line for a full disk: which file, and (when the writer knows its size) how much it needs and how
    much is free."""
    if needed is None:
        return DiskFull(f"{path}: the disk is full (no space left on device); {RERUN}")
    try:
        free = f"{_megabytes(shutil.disk_usage(Path(path).parent).free)} free"
    except OSError:
        free = "free space unknown"
    return DiskFull(f"no space left on the device of {path} (it needs about {_megabytes(needed)}, {free}); {RERUN}")


def is_disk_full(err: BaseException | None) -> bool:
    """Keras, h5py and matplotlib sometimes wrap the OSError: look down the chain of causes."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, DiskFull):
            return False  # already told, with its own path
        if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def _release(err: BaseException) -> None:
    """Keras leaves its HDF5 file open when a write fails, referenced from the failed call's frames: it would
    hold the temporary's space and complain ("Exception ignored in ... __dealloc__") whenever it is collected.
    Collect it now, with its complaint about the full disk (already reported) kept quiet."""
    traceback.clear_frames(err.__traceback__)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if is_disk_full(unraisable.exc_value) else hook(unraisable)
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _cannot_write(path: Path, target: Path, err: OSError) -> UcfpipeError:
    """An OSError met while writing `target` (the temporary's name in it) as one line naming the user's path."""
    problem = folder_problem(target.parent) or err.strerror or str(err)
    return UcfpipeError(f"{path}: {problem}; {how_to_fix(problem, 'write elsewhere')}")


def _names(err: BaseException, *paths: Path) -> bool:
    names = {str(p) for p in paths}
    return isinstance(err, OSError) and (str(err.filename) in names or str(err.filename2) in names)


def _send(out: Output, source) -> None:
    """Copy the readable binary `source` into a device, FIFO, socket or standard output, in place."""
    if out.target == Path(STDOUT):
        sys.stdout.flush()
        shutil.copyfileobj(source, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    if out.descriptor is not None:
        sys.stdout.flush()  # what was printed before comes first
        sys.stderr.flush()
        while chunk := source.read(1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(out.descriptor, view):]
        return
    with open(out.target, "wb") as sink:  # a FIFO blocks here until a reader opens it, as `cat > FIFO` does
        shutil.copyfileobj(source, sink)


@contextmanager
def _direct(out: Output, suffix: str, needed: int | None):
    """`replacing` for what is written in place: the writer fills a private temporary (Keras, OpenCV and
    matplotlib want a path), which is then copied over."""
    scratch = Path(tempfile.mkdtemp(prefix="ucfpipe-"))
    try:
        tmp = scratch / f"output{suffix}"
        yield tmp
        with open(tmp, "rb") as source:
            _send(out, source)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full(out.path, needed) from None
        if _names(err, out.target, tmp):
            raise UcfpipeError(f"{out.path}: {err.strerror}; write elsewhere") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _suffix(path: Path) -> str:
    return ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix


def temp_path(path: Path, keep_suffix: bool = False) -> Path:
    """`.NAME.PID.tmp` beside `path`: hidden (never matches v_*.avi or shard-*.h5), one per process. `keep_suffix`
    ends it in the target's own suffix too, from which Keras (.keras, .weights.h5) and FFmpeg pick the format."""
    path = Path(path)
    suffix = _suffix(path) if keep_suffix else ""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")


def temp_glob(name: str) -> str:
    """The pattern of every process's temporaries of the file `name` (to clear what a killed writer left)."""
    return f".{name}.*.tmp*"


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_directory(directory: Path) -> None:
    """Make a rename durable. Some file systems cannot sync a directory; the rename is then as durable as they allow."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def replacing(path: str | Path, *, keep_suffix: bool = False, durable: bool = True, needed: int | None = None):
    """Yield a temporary path beside `path`; when the block ends normally it replaces `path`. On any failure the
    temporary is removed and `path` is as it was; a full disk becomes `disk_full(path, needed)`. `durable`: sync
    the file before the rename and the directory after it (off for what a rerun simply makes again).

    What is replaced is always a regular file (`output`): through a link, the file it points to (the temporary
    beside that file); a device, FIFO, socket or `-` gets the finished temporary's bytes in place."""
    out = output(path)
    suffix = _suffix(out.path) if keep_suffix else ""  # the name the user gave picks the format
    if out.direct:
        with _direct(out, suffix, needed) as tmp:
            yield tmp
        return
    target = out.target
    tmp = temp_path(target)
    tmp = tmp.with_name(tmp.name + suffix)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        full = is_disk_full(err)
        if full:
            _release(err)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if full:
            raise disk_full(out.path, needed) from None
        if _names(err, tmp, target):
            raise _cannot_write(out.path, target, err) from None
        raise
    if durable:
        sync_directory(target.parent)


def write_bytes(path: str | Path, data: bytes, *, tell_size: bool = False) -> None:
    """`data` as the file `path`, synced; `tell_size`: a full disk says how much it needed. A device, FIFO,
    socket or `-` gets `data` in place."""
    with replacing(path, needed=len(data) if tell_size else None) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, *, tell_size: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), tell_size=tell_size)


def write_json(path: str | Path, data, *, tell_size: bool = False) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", tell_size=tell_size)


def pid_alive(pid: int) -> bool:
    """Whether a process `pid` runs on this machine (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(folder: Path, names=None, *, held: bool = False) -> list[Path]:
    """Remove the temporaries `.NAME.PID.tmp*` in `folder` (files, and `replacing_dir`'s staging directories)
    whose writer no longer runs: a kill -9 or a power cut leaves them, and nothing else would ever remove them.
    Only those of the files `names`, when given. A running writer's are left alone, unless `held`: the caller
    holds the lock of what they belong to, so every one is stale, this process's own included."""
    pattern = re.compile(r"\.(.+)\.(\d+)\.tmp.*", re.DOTALL)
    removed = []
    try:
        candidates = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in candidates:
        found = pattern.fullmatch(path.name)
        if not found or (names is not None and found[1] not in names):
            continue
        if not held and (int(found[2]) == os.getpid() or pid_alive(int(found[2]))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, text.getvalue())

@contextmanager
def replacing_dir(out: str | Path, staging: str | Path | None = None, *, update: bool = False):
    """Yield a new, empty staging directory beside `out` (by default `.NAME.PID.tmp`); when the block ends
    normally it takes the name `out`, which must be absent or an empty directory (`update`: an existing folder
    instead receives the staged files, each renamed over its old one). On any failure the staging directory, and
    any folder above `out` made for it, are removed and `out` is as it was. Staging directories of writers that
    were killed are removed first. `out` may be a link to a folder (the link stays); anything else that is not a
    folder is refused in one line."""
    given = Path(out)
    out = Path(os.path.realpath(given)) if os.path.islink(given) else given
    if os.path.lexists(out) and not out.is_dir():
        raise UcfpipeError(f"{given} is {kind(os.lstat(out).st_mode)}, not a folder; write elsewhere")
    made = _make_parents(given, out.parent)
    if staging is None:
        clear_stale(out.parent, [out.name])
    staging = Path(staging) if staging is not None else out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    done = False
    try:
        staging.mkdir()
        yield staging
        if update and out.is_dir():
            for item in sorted(staging.iterdir()):
                os.replace(item, out / item.name)
        else:
            if out.exists():
                out.rmdir()  # empty (the caller checked): the rename needs the name free on every platform
            os.replace(staging, out)
        done = True
    except OSError as err:
        name = str(err.filename or "")
        inside = name.startswith(str(staging) + os.sep)
        if not is_disk_full(err) and (inside or _names(err, staging, out)):
            raise _cannot_write(given / os.path.relpath(name, staging) if inside else given, staging, err) from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(made if not done else []):
            try:
                folder.rmdir()  # only what was made for this write, and only while empty
            except OSError:
                break
    sync_directory(out.parent)


def _make_parents(given: Path, folder: Path) -> list[Path]:
    """Make `folder` and the folders above it that are missing; return those made, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for made in missing:
        try:
            made.mkdir()
        except FileExistsError:
            pass
        except OSError:
            problem = folder_problem(made.parent)
            raise UcfpipeError(f"{given}: {problem or 'cannot create folder ' + str(made)}; "
                               f"{how_to_fix(problem, 'write elsewhere')}") from None
    return missing
