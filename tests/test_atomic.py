"""atomic: the one way files are written (temp beside the target, then rename)."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ucfpipe.core import files as atomic
from ucfpipe.core.errors import UcfpipeError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(path, keep_suffix=True) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".keras") and tmp.name.startswith(".")
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]
    atomic.write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_temporaries_end_in_tmp_unless_the_suffix_matters(tmp_path):
    assert atomic.temp_path(tmp_path / "a.json").name.endswith(".tmp")
    assert atomic.temp_path(tmp_path / "b.weights.h5", keep_suffix=True).name.endswith(".tmp.weights.h5")
    assert list(tmp_path.glob(atomic.temp_glob("a.json"))) == []
    atomic.temp_path(tmp_path / "a.json").write_text("left by a killed writer")
    assert len(list(tmp_path.glob(atomic.temp_glob("a.json")))) == 1


@pytest.mark.parametrize("needed, pattern", [(None, r"^\S+a\.json: the disk is full"),
                                             (2048, r"^no space left on the device of \S+a\.json \(it needs about 0\.0 MB")])
def test_a_full_disk_is_one_line_naming_the_file(tmp_path, needed, pattern):
    path = tmp_path / "a.json"
    with pytest.raises(atomic.DiskFull, match=pattern) as raised:
        with atomic.replacing(path, needed=needed) as tmp:
            tmp.write_text("x")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as err:
                raise RuntimeError("a library wrapped it") from err  # found down the chain of causes
    assert isinstance(raised.value, UcfpipeError) and list(tmp_path.iterdir()) == []


def test_a_directory_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "lists"
    with pytest.raises(RuntimeError):
        with atomic.replacing_dir(out) as staging:
            (staging / "a.txt").write_text("a")
            raise RuntimeError("stopped half-way")
    assert list(tmp_path.iterdir()) == []
    with atomic.replacing_dir(out) as staging:
        (staging / "a.txt").write_text("a")
    assert [p.name for p in tmp_path.iterdir()] == ["lists"] and (out / "a.txt").read_text() == "a"


KILLED_WRITER = """
import sys, time
from ucfpipe.core import files as atomic
with atomic.replacing_dir(sys.argv[1]) as staging:
    (staging / "half.bin").write_bytes(b"x" * 1000)
    print(staging, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_staging_directory_left_by_kill_9_is_removed_by_the_next_writer(tmp_path):
    out = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(Path(atomic.__file__).parents[1])}
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    staging = Path(writer.stdout.readline().strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    assert staging.is_dir() and staging.name == f".export.{writer.pid}.tmp"  # what kill -9 leaves
    running = tmp_path / f".export.{os.getppid()}.tmp"  # a writer that still runs keeps its staging directory
    running.mkdir()
    other = tmp_path / f".exports.{writer.pid}.tmp"  # another target's is not this writer's to clear
    other.mkdir()
    with atomic.replacing_dir(out) as new:
        (new / "a.txt").write_text("a")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", running.name, other.name])
