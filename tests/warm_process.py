"""`ucfpipe ARGS` as a real process of its own (its own pid, signals, exit status, kill -9) that starts warm.

A fresh interpreter spends about 6 CPU-seconds importing TensorFlow before ucfpipe does anything, and the tests
that signal or kill a running command start dozens of them. Here one server process per pytest process imports
Keras and ucfpipe once; each command is a fork of it that runs `python -m ucfpipe.cli ARGS` from there: the same
module run as __main__, with the test's arguments, environment, working directory and standard streams.

Use it only where the signal comes once the command is working. A signal during start-up (while TensorFlow
imports) needs a fresh interpreter: subprocess.Popen([sys.executable, "-m", "ucfpipe.cli", ...]). And only for the
TensorFlow backend this server imported (KERAS_BACKEND is read when Keras imports): start() refuses another.

    process = warm.start(["train", ...], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    process.send_signal(signal.SIGTERM); output, _ = process.communicate(timeout=60)

`Warm` objects answer as subprocess.Popen does for what the tests use: pid, stdout, stderr, poll, wait,
communicate, send_signal, terminate, kill, returncode. Run as a script, this file is the server.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# What the server imports before it forks (what the commands under test load): everything else a command needs
# is imported by the fork itself. Not ucfpipe.cli: the fork runs it as __main__, as `python -m` does, and a copy
# imported before would be a second one (runpy warns about it).
WARM_MODULES = ("keras", "ucfpipe.commands.stages", "ucfpipe.commands.serving", "ucfpipe.commands.tune",
                "ucfpipe.commands.data", "ucfpipe.commands.bench", "ucfpipe.stage_one.extract",
                "ucfpipe.stage_two.train", "ucfpipe.serving.live", "ucfpipe.search.loop")
START_SECONDS = 120  # the server's own start: one TensorFlow import, on a busy machine


class Server:
    """The warm server of this pytest process, started on first use and ended by pid (`close`)."""

    def __init__(self, folder: Path):
        self.path = folder / "warm.sock"
        self.log = folder / "warm-server.log"
        self.process: subprocess.Popen | None = None
        self.backend = ""

    def ensure_started(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, __file__, str(self.path)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + START_SECONDS
        while not self.path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the warm ucfpipe server did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def start(self, args, *, env=None, cwd=None, stdout=None, stderr=None, text=True,
              start_new_session=False) -> "Warm":
        env = dict(os.environ if env is None else env)
        self.ensure_started()
        if env.get("KERAS_BACKEND", "tensorflow") != self.backend:
            raise ValueError(f"the warm server imported Keras with the {self.backend} backend; use subprocess for another")
        return Warm(self.path, [str(a) for a in args], env, str(cwd or os.getcwd()), stdout, stderr, text,
                    start_new_session)

    def run(self, args, *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """As subprocess.run(..., capture_output=True, text=True)."""
        process = self.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
            raise
        return subprocess.CompletedProcess(["ucfpipe", *args], process.returncode, out, err)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


class Warm:
    """One forked command, seen from the test."""

    def __init__(self, server: Path, args, env, cwd, stdout, stderr, text, new_session):
        self.returncode: int | None = None
        self.args = args
        ours, theirs, ours_to_close = [], [], []  # our ends of pipes (to read), the fork's fds 0, 1, 2
        null = os.open(os.devnull, os.O_RDWR)
        theirs.append(null)
        ours_to_close.append(null)
        for target, inherited in ((stdout, 1), (stderr, 2)):
            if target is subprocess.PIPE:
                read, write = os.pipe()
                ours.append(read)
                theirs.append(write)
                ours_to_close.append(write)
            else:
                ours.append(None)
                theirs.append(null if target is subprocess.DEVNULL else theirs[1] if target is subprocess.STDOUT
                              else target.fileno() if hasattr(target, "fileno") else inherited)
        self.connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.connection.connect(str(server))
        request = json.dumps({"args": args, "env": env, "cwd": cwd, "new_session": new_session}).encode()
        socket.send_fds(self.connection, [request], theirs)
        self.connection.shutdown(socket.SHUT_WR)  # the request ends here; the answers come back on this socket
        for fd in ours_to_close:  # the fork holds its own copies now
            os.close(fd)
        self.lines = self.connection.makefile("r")
        self.pid = int(self.lines.readline())
        self.stdout, self.stderr = (None if fd is None else
                                    (io.open(fd, "r", encoding="utf-8", errors="replace") if text else io.open(fd, "rb"))
                                    for fd in ours)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.connection], [], [], 0)[0]:
            line = self.lines.readline()
            self.returncode = int(line) if line else -signal.SIGKILL  # no line: the server itself was killed
            self.lines.close()
            self.connection.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.connection], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.poll()
        return self.returncode

    def communicate(self, timeout: float | None = None):
        """Read stdout and stderr to their ends, then wait: subprocess's way where it has no poll()."""
        found = {}
        readers = [threading.Thread(target=lambda name=name, stream=stream: found.__setitem__(name, stream.read()),
                                    daemon=True)
                   for name, stream in (("out", self.stdout), ("err", self.stderr)) if stream is not None]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return found.get("out"), found.get("err")

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# -- the server ----------------------------------------------------------------------------------------------------
def serve(path: str):
    """Accept requests until killed or orphaned; fork one child per request and tell its client the pid, then its
    exit status. Returns only in a child: its request and the fds to become its standard streams."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the path appears once the server answers
    clients: dict[int, socket.socket] = {}
    parent = os.getppid()
    while os.getppid() == parent:  # the pytest process that started it is gone (even by kill -9): end too
        if select.select([listener], [], [], 0.05)[0]:
            connection, _ = listener.accept()
            message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 3)
            while chunk := connection.recv(1 << 16):  # the rest of a long request, up to the client's SHUT_WR
                message += chunk
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in clients.values():
                    other.close()
                connection.close()
                return json.loads(message), fds
            for fd in fds:
                os.close(fd)
            connection.sendall(f"{pid}\n".encode())
            clients[pid] = connection
        while clients:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            connection = clients.pop(pid, None)
            if connection is not None:
                try:
                    connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:  # the test stopped listening
                    pass
                connection.close()
    sys.exit(0)


def become(request: dict, fds: list[int]) -> None:
    """In the fork: the test's streams, session, directory, environment and arguments, then the command."""
    import runpy

    for number, fd in enumerate(fds):
        os.dup2(fd, number)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    if request["new_session"]:
        os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [sys.executable, *request["args"]]
    runpy.run_module("ucfpipe.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    import importlib

    for module in WARM_MODULES:
        importlib.import_module(module)
    assert "ucfpipe.cli" not in sys.modules, "a warm module imports ucfpipe.cli: the fork could not run it as __main__"
    become(*serve(sys.argv[1]))
