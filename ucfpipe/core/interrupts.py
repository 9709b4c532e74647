"""Ctrl-C and SIGTERM that are never lost. Python turns SIGINT into a KeyboardInterrupt wherever the main thread
happens to be, and a few places swallow it: a garbage-collector callback or a `__del__` (JAX's
`_xla_gc_callback` prints "Exception ignored in ..." and the run goes on). The CLI installs `handler`, which
raises as Python does but also records the request, so that the next safe point (`check`, called between
batches and clips) raises again when the first one was swallowed, and the CLI can tell at the end that the
user asked to stop.

SIGTERM (what `timeout`, `docker stop`, `kill` and systemd send) takes exactly the same way: by default it
ends Python at once, mid-write, with no summary; here it raises the same KeyboardInterrupt at the same
points, so every stage keeps what Ctrl-C keeps. Only the exit status tells them apart (`exit_status`): 130
for SIGINT and 143 for SIGTERM, 128 + the signal's number, as a shell, `docker` and systemd report a process
that the signal ended, so a supervisor reads the same status whether the handler ran or not.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

# The signals that ask a run to stop, and how the run then says it stopped.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
HOW = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

_requested = False
_signal = signal.SIGINT  # the last stop signal received (SIGINT also stands for a KeyboardInterrupt from code)


def _note(signum) -> None:
    global _requested, _signal
    _requested = True
    _signal = signal.Signals(signum)


def _handler(signum, frame):
    _note(signum)
    raise KeyboardInterrupt


def _quiet_unraisable(unraisable):
    """A KeyboardInterrupt swallowed by a gc callback is not lost (see `check`): no "Exception ignored" trace."""
    if issubclass(unraisable.exc_type, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def _record(signum, frame):
    _note(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _set_all(handler) -> dict:
    return {number: signal.signal(number, handler) for number in SIGNALS}


def record_only() -> None:
    """While the command's own modules import, before anything could catch a KeyboardInterrupt: only note a
    Ctrl-C or SIGTERM; `install` then raises it."""
    if _main_thread():
        _set_all(_record)


def install():
    """Install the handler (main thread only; elsewhere signals cannot be handled). Returns what it replaced,
    for `restore`. A signal noted by `record_only` stays noted: the next `check` raises it."""
    if not _main_thread():
        return None
    previous = (_set_all(_handler), sys.unraisablehook)
    sys.unraisablehook = _quiet_unraisable
    return previous


def restore(previous) -> None:
    global _requested, _signal
    _requested, _signal = False, signal.SIGINT
    if previous is not None and _main_thread():
        for number, handler in previous[0].items():
            signal.signal(number, handler)
        sys.unraisablehook = previous[1]


def exit_status() -> int:
    """128 + the signal that stopped the run: 130 for Ctrl-C (or a KeyboardInterrupt raised by code), 143 for
    SIGTERM."""
    return 128 + int(_signal)


def how() -> str:
    """How the run was stopped, for messages: "Ctrl-C" or "SIGTERM"."""
    return HOW.get(_signal, _signal.name)


def forget_escaped() -> None:
    """Let the exit status asked for stand. CPython remembers a KeyboardInterrupt that escaped code run from a
    string (builtin `eval` of a string, as `collections.namedtuple` does while JAX and TensorFlow import) and,
    under `python -m`, then ends the process by SIGINT whatever status `sys.exit` was given. Evaluating any
    string clears that memory (pythonrun.c, run_eval_code_obj)."""
    eval("None")


def ignore() -> None:
    """While the process reports an interrupt and exits, a second Ctrl-C or SIGTERM must not break that one
    line (the status stays that of the first)."""
    if _main_thread():
        _set_all(lambda *_: None)


@contextmanager
def deferred(then_raise: bool = True):
    """Hold a Ctrl-C or SIGTERM back while the body runs, then raise it. For importing TensorFlow: a
    KeyboardInterrupt half-way through the start of its C extensions can crash the interpreter at exit (a
    segfault instead of exit 130); the import takes seconds, so the interrupt waits that long. Also for
    finishing a file that must be whole (live's recording, after the run already stopped: `then_raise=False`,
    a second signal then only being noted)."""
    if not _main_thread() or signal.getsignal(signal.SIGINT) is not _handler:
        yield
        return
    _set_all(_record)
    try:
        yield
    finally:
        _set_all(_handler)
    if then_raise:
        check()


def requested() -> bool:
    """Whether Ctrl-C or SIGTERM came (its KeyboardInterrupt may have been turned into another error on the way
    out: TensorFlow reports one raised while a compiled function runs as its own error)."""
    return _requested


def check() -> None:
    """A safe point: raise KeyboardInterrupt if Ctrl-C or SIGTERM came, even when its first raise was swallowed."""
    if _requested:
        raise KeyboardInterrupt
