"""The one lock: one writer per feature cache, run directory or output file.

An OS lock (flock) on a small file beside what is written: it dies with its process, so a `kill -9` leaves no
stale lock behind. The holder writes its pid and command into the file, so a second process can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError


@contextmanager
def locked(lock_file: Path, what: str, busy: str = "wait for it to finish, or stop it first"):
    """Hold the lock on `lock_file` for the block. `what` names the thing locked ("run directory R"); `busy`
    says what a second writer can do instead."""
    try:
        handle = open(lock_file, "a+b", buffering=0)  # unbuffered: a note that fails to write is not retried at close
    except OSError as err:
        raise UcfpipeError(f"cannot lock the {what} ({lock_file}: {err.strerror}); choose a writable location") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().decode("utf-8", "replace").strip() or "another process"
        handle.close()
        raise UcfpipeError(f"the {what} is in use by {holder}; {busy}") from None
    try:
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} (ucfpipe {' '.join(sys.argv[1:])})\n".encode())
        except OSError:
            pass  # a full disk must not stop the run: the lock holds without its note
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
