"""Handing work between threads through a bounded queue, without blocking past a stop: a producer thread
(a decoder, a camera reader) must end once the consumer stopped, or it holds its capture and the process."""

from __future__ import annotations

import queue
import threading


def put_unless_stopped(items: queue.Queue, item, stop: threading.Event, poll_seconds: float = 0.1) -> bool:
    """Put `item` into `items`, waiting while it is full; False (item dropped) once `stop` is set."""
    while not stop.is_set():
        try:
            items.put(item, timeout=poll_seconds)
            return True
        except queue.Full:
            continue
    return False
