"""Ray processes as the Ray tests see them: every one a descendant of a process the test started (the CLI, or
`ray start --block`), found through /proc and ended by pid; every wait bounded. Shared by test_ray_engine.py
and test_ray_faults.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO

TOKEN = uuid.uuid4().hex


def ray_env(**extra) -> dict:
    # Token auth on, with a token of this test run only (Ray 2.60 wants one on every node; none lands in ~/.ray).
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
            "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "90", **extra}



@pytest.fixture(autouse=True)
def ray_token(monkeypatch):
    """Every test of a file that imports this fixture runs with this session's token."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)


# -- processes, through /proc ---------------------------------------------------------------------------------
def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every living descendant of `pid`."""
    children: dict[int, list[int]] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = lines.get(child, "")
        todo += children.get(child, [])
    return found


def started_here() -> dict[int, str]:
    """What this pytest process has running below it, less the warm ucfpipe server it keeps for other tests
    (tests/warm_process.py): after a Ray run, nothing."""
    return {pid: line for pid, line in descendants(os.getpid()).items() if "warm_process.py" not in line}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids, seconds: float = 30.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def end_tree(pid: int) -> None:
    """kill -9 `pid` and every descendant (what a failed test leaves); by pid only."""
    for child in [*descendants(pid), pid]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Run:
    """`ucfpipe extract` in its own session, its Ray processes remembered as they appear."""

    def __init__(self, args, out: Path, env=None):
        self.out = out
        self.process = subprocess.Popen([sys.executable, "-m", "ucfpipe.cli", "extract", *map(str, args), "--out", str(out)],
                                        cwd=REPO, env=env or ray_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.seen: dict[int, str] = {}

    def watch(self) -> dict[int, str]:
        self.seen.update(descendants(self.process.pid))
        return self.seen

    def wait_for(self, condition, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.watch()
            found = condition()
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"the run ended before {what}:\n{self.process.stdout.read()}")
            time.sleep(0.1)
        pytest.fail(f"no {what} within {seconds} s")

    def finish(self, seconds: float = 240.0) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            end_tree(self.process.pid)
            pytest.fail(f"the run did not end within {seconds} s")
        return self.process.returncode, output

    def shards(self) -> list[Path]:
        return sorted(self.out.glob("shard-*.h5"))

    def close(self, seconds: float = 30.0, lingering: tuple[str, ...] = ()):
        """End the run if it still runs, then wait for every Ray process it started to be gone; a process whose
        command line holds one of `lingering` (known to outlive a killed driver by a minute) is ended by pid
        once the others are gone, instead of waited for."""
        if self.process.poll() is None:
            end_tree(self.process.pid)
        self.process.wait(timeout=30)
        expected = [p for p in self.seen if not any(f in self.seen[p] for f in lingering)]
        left = wait_gone(expected, seconds)
        for pid in [p for p in self.seen if p not in expected and alive(p)]:
            os.kill(pid, signal.SIGKILL)
        if left:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"Ray processes outlived the run: {[self.seen[p][:80] for p in left]}")


def ray_process(fragment: str):
    return lambda run: next((pid for pid, line in run.seen.items() if fragment in line and alive(pid)), None)



def data_flags(data) -> list[str]:
    return ["--videos", data["videos"], "--splits", data["splits"]]


def assert_every_clip_once(out: Path, data: dict, reference: Path | None = None) -> None:
    from ucfpipe import FeatureStore
    from ucfpipe.datasets import all_clips

    listed = sorted(c.video_id for c in all_clips("ucf101", data["splits"]))
    with FeatureStore(out) as store:  # refuses a cache whose shards repeat a clip
        assert sorted(store.video_ids) == listed
        if reference is not None:
            with FeatureStore(reference) as local:
                assert store.fingerprint == local.fingerprint
                np.testing.assert_array_equal(store.features(listed), local.features(listed))
