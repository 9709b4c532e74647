"""Ctrl-C that is never lost. Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to
be, and a few places swallow it: a garbage-collector callback or a `__del__` (JAX's `_xla_gc_callback` prints
"Exception ignored in ..." and the run goes on). The CLI installs `handler`, which raises as Python does but
also records the request, so that the next safe point (`check`, called between batches and clips) raises
again when the first one was swallowed, and the CLI can tell at the end that the user asked to stop.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

_requested = False


def _handler(signum, frame):
    global _requested
    _requested = True
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable):
    """A KeyboardInterrupt swallowed by a gc callback is not lost (see `check`): no "Exception ignored" trace."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _record(signum, frame):
    global _requested
    _requested = True


def record_only() -> None:
    """While the command's own modules import, before anything could catch a KeyboardInterrupt: only note a
    Ctrl-C; `install` then raises it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _record)


def install():
    """Install the handler (main thread only; elsewhere signals cannot be handled). Returns what it replaced,
    for `restore`. A Ctrl-C noted by `record_only` stays noted: the next `check` raises it."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = (signal.signal(signal.SIGINT, _handler), sys.unraisablehook)
    sys.unraisablehook = _quiet_unraisable
    return previous


def restore(previous) -> None:
    global _requested
    _requested = False
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous[0])
        sys.unraisablehook = previous[1]


def forget_escaped() -> None:
    """Let the exit status asked for stand. CPython remembers a KeyboardInterrupt that escaped code run from a
    string (builtin `eval` of a string, as `collections.namedtuple` does while JAX and TensorFlow import) and,
    under `python -m`, then ends the process by SIGINT whatever status `sys.exit` was given. Evaluating any
    string clears that memory (pythonrun.c, run_eval_code_obj)."""
    eval("None")


def ignore() -> None:
    """While the process reports an interrupt and exits, a second Ctrl-C must not break that one line."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: None)


@contextmanager
def deferred():
    """Hold a Ctrl-C back while the body runs, then raise it. For importing TensorFlow: a KeyboardInterrupt
    half-way through the start of its C extensions can crash the interpreter at exit (a segfault instead of
    exit 130); the import takes seconds, so the interrupt waits that long."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not _handler:
        yield
        return
    signal.signal(signal.SIGINT, _record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, _handler)
    check()


def check() -> None:
    """A safe point: raise KeyboardInterrupt if Ctrl-C was pressed, even when its first raise was swallowed."""
    if _requested:
        raise KeyboardInterrupt
