"""Many machines' mode against a real PostgreSQL server that the test starts itself (Debian's postgresql: its own
data directory, loopback only, trust auth, stopped by its pid): one `tune --out` and one `tune --worker` on it
finish K trials together, none twice. Skipped with one line where the server's programs are absent."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tune_helpers import spawn, study_trials, tune_args

pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")
pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (the test extra has it)")


def server_programs() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


class TempPostgres:
    """initdb + pg_ctl start in a temp folder; stop() sends the postmaster SIGINT ("fast" shutdown) by pid."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        as_root = os.geteuid() == 0
        self.prefix = ["runuser", "-u", "postgres", "--"] if as_root else []  # initdb refuses root
        self.root = tempfile.mkdtemp(prefix="ucfpipe-pg-")  # not tmp_path: /tmp/pytest-of-root is 0700
        if as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.pid = None

    def _run(self, program: str, *args: str, timeout: float = 60):
        subprocess.run(self.prefix + [os.path.join(self.bindir, program), *args], capture_output=True, text=True,
                       timeout=timeout, check=True)

    def start(self) -> str:
        data, sock = f"{self.root}/data", f"{self.root}/sock"
        self._run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        subprocess.run(self.prefix + ["mkdir", "-p", sock], check=True, timeout=10)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._run("pg_ctl", "-D", data, "-l", f"{self.root}/server.log", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c synchronous_commit=off "
                  "-c full_page_writes=off -c max_connections=50", "-w", "-t", "60", "start", timeout=70)
        with open(f"{data}/postmaster.pid") as record:
            self.pid = int(record.readline())
        self._run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"

    def stop(self) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_url():
    bindir = server_programs()
    if bindir is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)")
    server = TempPostgres(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_tune_and_a_worker_on_postgresql_finish_k_trials_together(tune_setup, postgres_url, warm):
    out = tune_setup["tmp"] / "search"
    lead = spawn(warm, tune_args(tune_setup, "--out", out, "--storage", postgres_url, trials=4))
    helper = spawn(warm, tune_args(tune_setup, "--worker", "--storage", postgres_url, trials=4))
    outputs = [process.communicate(timeout=600)[0] for process in (lead, helper)]
    assert lead.returncode == 0 and helper.returncode == 0, outputs
    finished = [t for t in study_trials(postgres_url) if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.number for t in finished) == sorted({t.number for t in finished}) and len(finished) == 4
    assert json.loads((out / "tune.json").read_text())["storage"] == postgres_url
    assert json.loads((out / "result.json").read_text())["finished"] == 4
    assert not (out / "study.db").exists()
