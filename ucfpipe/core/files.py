"""Files are written one way: under a temporary name beside the target, then renamed over it, so a reader (or a
rerun after a crash, Ctrl-C or a full disk) sees the old file or the new one, never half of one.

    with replacing(path, keep_suffix=True) as tmp:   # write tmp however you like (Keras, matplotlib, OpenCV)
        model.save(tmp)
    write_bytes(path, data) / write_text / write_json   # the same for data already in memory
    with replacing_dir(out) as staging: ...             # a whole new directory, renamed into place at the end

On any failure the temporary is removed and the target is as it was; a full disk becomes one line (`DiskFull`).
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
import traceback
from contextlib import contextmanager
from pathlib import Path

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


def temp_path(path: Path, keep_suffix: bool = False) -> Path:
    """`.NAME.PID.tmp` beside `path`: hidden (never matches v_*.avi or shard-*.h5), one per process. `keep_suffix`
    ends it in the target's own suffix too, from which Keras (.keras, .weights.h5) and FFmpeg pick the format."""
    path = Path(path)
    suffix = (".weights.h5" if path.name.endswith(".weights.h5") else path.suffix) if keep_suffix else ""
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
    the file before the rename and the directory after it (off for what a rerun simply makes again)."""
    path = Path(path)
    tmp = temp_path(path, keep_suffix)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        full = is_disk_full(err)
        if full:
            _release(err)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if full:
            raise disk_full(path, needed) from None
        raise
    if durable:
        sync_directory(path.parent)


def write_bytes(path: str | Path, data: bytes, *, tell_size: bool = False) -> None:
    """`data` as the file `path`, synced; `tell_size`: a full disk says how much it needed."""
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


def clear_stale_dirs(out: Path) -> list[Path]:
    """Remove the staging directories `.NAME.PID.tmp` beside `out` whose writer no longer runs (a kill -9 or a
    power cut leaves them, and nothing else would ever remove them); a running writer's is left alone."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(\d+)\.tmp")
    removed = []
    try:
        candidates = list(out.parent.iterdir())
    except OSError:
        return removed
    for path in candidates:
        found = pattern.fullmatch(path.name)
        if found and int(found[1]) != os.getpid() and not pid_alive(int(found[1])) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed



def write_csv(path: str | Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, text.getvalue())

@contextmanager
def replacing_dir(out: str | Path, staging: str | Path | None = None):
    """Yield a new, empty staging directory beside `out` (by default `.NAME.PID.tmp`); when the block ends
    normally it takes the name `out`, which must be absent or an empty directory. On any failure the staging
    directory is removed and `out` is as it was. Staging directories of writers that were killed are removed
    first."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if staging is None:
        clear_stale_dirs(out)
    staging = Path(staging) if staging is not None else out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        yield staging
        if out.exists():
            out.rmdir()  # empty (the caller checked): the rename needs the name free on every platform
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    sync_directory(out.parent)
