"""The Ray cluster a `extract --engine ray` run works on: Ray imported (or the extra named), an --address
checked for being a Ray head node within seconds, joined (or a cluster started on this machine for the run and
shut down after it, however it ends), and every node checked for seeing --videos. `ray_engine` runs the work
on it."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ucfpipe.core import interrupts
from ucfpipe.core.errors import UcfpipeError

INSTALL = "pip install 'ucfpipe[ray]'"
CONNECT_SECONDS = 30.0  # an --address that does not answer in this long is refused


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (needs pandas and pyarrow, which the extra brings)
    except ImportError as err:
        raise UcfpipeError(f"--engine ray needs Ray Data ({err.name or err} is not installed): {INSTALL}, "
                           "or pass --engine local") from None
    return ray


# A Ray head's GCS speaks gRPC, so HTTP/2: to the client's connection preface and an empty SETTINGS frame it
# answers with its own SETTINGS frame at once (RFC 9113, 3.4). A web server (the dashboard's port, passed by
# mistake) answers otherwise or hangs up, and a listener that is no server says nothing: ray.init would retry
# either for minutes, in C++ code that a SIGTERM does not interrupt.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
ANSWER_SECONDS = 5.0  # a GCS answers the preface in milliseconds


def _check_answers(ray, address: str) -> str:
    """HOST:PORT of `address` ("auto": the cluster `ray start` runs on this machine, or RAY_ADDRESS), once a TCP
    connection to it succeeded within CONNECT_SECONDS and it answered as a gRPC server (a Ray head's GCS) within
    ANSWER_SECONDS."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError) as err:
        if address == "auto":  # Ray's own text asks for an --address flag or RAY_ADDRESS
            resolved = None
        else:
            raise UcfpipeError(f"--address {address} is no Ray address ({err}); pass auto or HOST:PORT of the head node") from None
    if not resolved:
        raise UcfpipeError(f"--address {address}: no Ray cluster is running on this machine; start one with "
                           "`ray start --head`, pass HOST:PORT of another head node, or drop --address to let the run "
                           "start its own (docs/ray.md)")
    named = resolved if address == "auto" else address  # Ray turns 127.0.0.1 into this machine's address
    host, _, port = named.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as connection:
            why = _not_grpc(connection)
    except (OSError, ValueError) as err:
        raise UcfpipeError(f"the Ray cluster at {named} does not answer ({getattr(err, 'strerror', None) or err}); "
                           "check that `ray start --head` runs there and the port is open, or pass another --address") from None
    if why:
        raise UcfpipeError(f"{named} is not a Ray head node ({why}); pass the address `ray start --head` printed "
                           "(its GCS port, 6379 by default, not the dashboard's 8265) as --address")
    return resolved


def _not_grpc(connection: socket.socket) -> str:
    """Why the server on `connection` is no gRPC server, or "" if it answered the HTTP/2 preface as one.
    TLS clusters (RAY_USE_TLS) speak TLS first: for them the connection alone counts."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return ""
    deadline = time.monotonic() + ANSWER_SECONDS
    connection.sendall(HTTP2_PREFACE)
    head = b""
    while len(head) < 9:
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(9 - len(head))
        except TimeoutError:
            return f"it said nothing within {ANSWER_SECONDS:g} s"
        if not chunk:
            break
        head += chunk
    if len(head) == 9 and head[3] == SETTINGS_FRAME:
        return ""
    if head.startswith(b"HTTP/"):
        return "it answers in HTTP/1, as a web server does"
    return "it closed the connection" if not head else "it answered, but not as a gRPC server"


@contextmanager
def cluster(address: str):
    """Connected to the cluster at `address`, or, with "", to one started on this machine for the run (in its own
    temporary directory) and shut down when the run ends, however it ends: no Ray process outlives the run."""
    ray = import_ray()
    # ray.init replaces SIGTERM's handler with one that exits with status 15, skipping the writer's flush:
    # the CLI's handlers (Ctrl-C and SIGTERM -> 130/143 with finished clips kept) are put back after it.
    handlers = {number: signal.getsignal(number) for number in interrupts.SIGNALS} \
        if threading.current_thread() is threading.main_thread() else {}
    temp = None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            resolved = _check_answers(ray, address)
            try:
                _init(ray, handlers, address=resolved, **quiet)
            except Exception as err:  # ConnectionError, AuthenticationError, a version mismatch: Ray says which
                raise UcfpipeError(f"cannot join the Ray cluster at {resolved}: {first_line(err)} (docs/ray.md)") from None
        else:
            # A short path: Ray's socket names must fit in 107 bytes.
            temp = tempfile.mkdtemp(prefix="ucfpipe-ray-", dir="/tmp")
            _init(ray, handlers, address="local", _temp_dir=temp, include_dashboard=False, **quiet)
        for number, handler in handlers.items():
            signal.signal(number, handler)
        yield ray
    finally:
        ray.shutdown()
        for number, handler in handlers.items():
            signal.signal(number, handler)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def _init(ray, handlers: dict, **settings) -> None:
    """ray.init, where a SIGTERM during the start ends as anywhere else in the run (143, one line): Ray's own
    handler, set first thing, would end the command with sys.exit(15)."""
    try:
        ray.init(**settings)
    except SystemExit as stop:
        if stop.code != signal.SIGTERM or not handlers:
            raise
        signal.signal(signal.SIGTERM, handlers[signal.SIGTERM])
        signal.raise_signal(signal.SIGTERM)  # ours: noted, and raised as a KeyboardInterrupt
        raise


def first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def check_workers_read(ray, videos: Path, relative_path: str) -> None:
    """Every node with CPUs opens one listed clip before any work is sent: a path the driver sees and the workers
    do not (no shared file system, another mount point) would otherwise fail every clip one by one."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def can_read(path: str):
        try:
            with open(path, "rb") as file:
                file.read(1)
            return None
        except OSError as err:
            return err.strerror or str(err)

    path = str(videos / relative_path)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    futures = {n["NodeManagerAddress"]: can_read.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(path) for n in nodes}
    try:
        answers = dict(zip(futures, ray.get(list(futures.values()), timeout=120)))
    except ray.exceptions.GetTimeoutError:
        raise UcfpipeError("the Ray nodes did not run a task within 120 s; check `ray status`") from None
    for node, why in answers.items():
        if why:
            raise UcfpipeError(f"the Ray workers on {node} cannot read {path} ({why}): every node must see --videos "
                               "at the same absolute path (a shared file system), or pass --engine local")
