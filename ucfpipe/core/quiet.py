"""The command line's quiet start: TensorFlow's C++ start-up lines never bury the one line a user needs.

TensorFlow's C++ code logs through absl before absl is initialised, so `TF_CPP_MIN_LOG_LEVEL` does not reach
these lines (`WARNING: All log messages before absl::InitializeLog()...`, `oneDNN custom operations are on...`);
turning oneDNN off would silence one of them but change the numbers. Instead, while Keras (or TensorFlow) is
first imported, file descriptor 2 points at a temporary file, and afterwards everything written there is
passed on except those known lines: nothing else is lost, warnings and errors included, and no computation
changes. Only `ucfpipe` the command installs this (`install()`); importing the library leaves stderr alone.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

from ucfpipe.core import interrupts

# The start-up lines of TensorFlow's C++ runtime, and nothing that could be a real warning or error.
CHATTER = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\] "
)
FIRST_IMPORTS = ("keras", "tensorflow")  # whichever comes first loads TensorFlow's runtime


@contextmanager
def stderr_filtered():
    """Run the body with fd 2 captured; then write what it wrote, less CHATTER lines, to the real stderr."""
    sys.stderr.flush()
    try:
        captured = tempfile.TemporaryFile()
        saved = os.dup(2)
    except OSError:  # no temporary file (a full /tmp): better chatter than no start at all
        yield
        return
    os.dup2(captured.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        captured.seek(0)
        text = captured.read().decode("utf-8", errors="replace")
        captured.close()
        kept = [line for line in text.splitlines(keepends=True) if not CHATTER.match(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


@contextmanager
def stderr_lines_dropped(lines: re.Pattern):
    """Run the body with fd 2 going through a pipe: a thread passes everything on to the real stderr as it comes
    (a progress bar's partial lines at once), except whole lines that `lines` matches in full. For C++ code
    that writes to fd 2 itself (Ray's core worker). The body must start no process: a child would keep the
    pipe open."""
    sys.stderr.flush()
    try:
        reader, writer = os.pipe()
        saved = os.dup(2)
    except OSError:
        yield
        return
    os.dup2(writer, 2)
    os.close(writer)

    def write(data: bytes) -> None:
        while data:
            data = data[os.write(saved, data):]

    def pump() -> None:
        pending = b""
        try:
            while chunk := os.read(reader, 1 << 16):
                *whole, pending = (pending + chunk).split(b"\n")
                write(b"".join(line + b"\n" for line in whole if not lines.fullmatch(line.decode("utf-8", "replace"))))
                if pending and not pending.startswith(b"["):  # only a log line (its "[time ...]" first) is held
                    write(pending)
                    pending = b""
            write(pending)
        except OSError:  # the real stderr closed, or the body outlived the join below
            pass

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the thread reads the rest, then the end
        thread.join(timeout=5)
        os.close(reader)
        os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """The real loader of keras/tensorflow, executing the module with stderr filtered."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with stderr_filtered(), interrupts.deferred():  # a Ctrl-C waits until TensorFlow has fully loaded
            self._loader.exec_module(module)

    def __getattr__(self, name):  # resources, is_package, ...: the real loader's
        return getattr(self._loader, name)


class _FirstImportFinder(importlib.abc.MetaPathFinder):
    """Finds the first of FIRST_IMPORTS like the import system would, and hands it a quiet loader; then
    steps aside (later imports of anything are untouched)."""

    def find_spec(self, name, path=None, target=None):
        if name not in FIRST_IMPORTS:
            return None
        uninstall()
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


_FINDER = _FirstImportFinder()


def install() -> None:
    """Filter TensorFlow's start-up lines at the first import of Keras or TensorFlow, if that is still to come."""
    if not any(name in sys.modules for name in FIRST_IMPORTS) and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
