"""Shared fixtures: the genuine clips in ../shared, a synthetic dataset, a tiny feature cache of it, and small
real file systems to fill. Plain helpers are in helpers.py."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from helpers import QUIET, SHARED_UCF101, copy_run, extract_tiny, tiny_config  # noqa: E402


@pytest.fixture(scope="session")
def official_splits() -> Path:
    path = SHARED_UCF101 / "ucfTrainTestlist"
    assert path.is_dir(), f"the official split files are expected at {path} (../shared beside the checkout)"
    return path


@pytest.fixture(scope="session")
def genuine_videos() -> Path:
    path = SHARED_UCF101 / "UCF-101"
    assert path.is_dir(), f"the genuine UCF-101 clips are expected at {path} (../shared beside the checkout)"
    return path


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> dict:
    """6 classes (3 time-reversed pairs) x 6 groups x 3 clips; split s tests on groups of block s."""
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), num_classes=6, num_groups=6, clips_per_group=3, seed=0)




@pytest.fixture(scope="session")
def synth_cache(synth_dataset, tmp_path_factory) -> Path:
    """The synthetic dataset through stage one at tiny size. Read-only for tests: copy it to modify."""
    return extract_tiny(synth_dataset, tmp_path_factory.mktemp("cache") / "features")


# -- a full disk -------------------------------------------------------------------------------------------------
@pytest.fixture
def disk_of(tmp_path):
    """`disk_of(size)`: a real file system of that size (tmpfs; the tests run as root, as CI does). Where
    mounting is refused the full-disk tests are skipped rather than faked."""
    mounted = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the full-disk tests need root")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def small_disk(disk_of):
    return disk_of("4m")


# How `make test` shares the work among its processes (pytest-xdist, --dist loadfile --no-loadscope-reorder): in
# units that each build their module's fixtures once, longest first, so that no long unit starts last and leaves
# one process working alone at the end. A unit is a whole file, except that a file in BY_PARAMETER is cut by the
# first parameter of its tests (test_matrix.py: one unit per backbone or dataset kind, 20 to 70 s each, instead
# of one of 400 s). Without --no-loadscope-reorder xdist would sort the units by their number of tests.
BY_PARAMETER = ("test_matrix.py",)
# The files that take longest (their seconds in one `make test`), longest first; the rest keep their order.
LONGEST_FIRST = ("test_ray_faults.py",  # 240
                 "test_run_reliability.py", "test_ray_engine.py", "test_tune.py",  # 140, 140, 120
                 "test_export.py", "test_backbones.py", "test_live.py",  # 110 to 90
                 "test_matrix.py",  # 410 in units of 20 to 70
                 "test_cache_integrity.py", "test_finetune.py", "test_commands_data.py", "test_check.py",  # 60 to 35
                 "test_extract.py", "test_batches.py", "test_bench_extract.py", "test_distribute.py",  # 35 to 30
                 "test_tune_postgres.py", "test_evaluate.py")


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or for a file in BY_PARAMETER its file and first parameter."""
    path, _, test = nodeid.partition("::")
    if Path(path).name in BY_PARAMETER and "[" in test:
        return f"{path}::{test.split('[', 1)[1].rstrip(']').split('-', 1)[0]}"
    return path


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(items):
    """A test that fills a real tmpfs disk is slow (`make test` runs it, `make test-fast` does not). Files in
    LONGEST_FIRST come first, whole and in their own order; the rest keep theirs."""
    for item in items:
        if {"disk_of", "small_disk"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests stay in order


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only file system (tmpfs mounted ro): root ignores chmod, not a read-only mount."""
    point = tmp_path / "read-only"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({done.stderr.strip()}); the test needs root")
    yield point
    subprocess.run(["umount", "-l", str(point)], check=False)


# -- commands as processes of their own, started warm -----------------------------------------------------------
@pytest.fixture(scope="session")
def warm(tmp_path_factory):
    """`warm.start(ARGS, ...)`: `ucfpipe ARGS` as a real process, forked from one that imported Keras once (see
    warm_process.py: for signals and kills once the command works, not during its start-up)."""
    from warm_process import Server

    server = Server(tmp_path_factory.mktemp("warm"))
    yield server
    server.close()


# -- a tune search on the tiny cache (test_tune.py, test_tune_postgres.py) ----------------------------------------
@pytest.fixture
def tune_setup(synth_cache, synth_dataset, tmp_path) -> dict:
    """The tiny cache and its splits, with tune_helpers' space.toml and train.toml written in the test's folder."""
    from tune_helpers import TINY_SPACE, TRAIN

    (tmp_path / "space.toml").write_text(TINY_SPACE)
    (tmp_path / "train.toml").write_text(TRAIN)
    return {"cache": synth_cache, "splits": synth_dataset["splits"], "space": tmp_path / "space.toml",
            "config": tmp_path / "train.toml", "tmp": tmp_path}


# -- one tiny run, trained once a session --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_training(synth_cache, synth_dataset, tmp_path_factory) -> tuple[Path, dict]:
    """(run directory, train.run's summary) of the tiny run: synth_cache, split 1, TINY_TRAIN, seed 0. Read-only
    for tests (never evaluated in place): copy it to change it (`helpers.copy_run`)."""
    from ucfpipe.stage_two import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    summary = train.run(tiny_config(synth_cache, synth_dataset["splits"], out), **QUIET)
    return out, summary


@pytest.fixture(scope="session")
def tiny_run(tiny_training) -> Path:
    """The tiny run's directory (see tiny_training). Read-only for tests."""
    return tiny_training[0]


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """A copy of the tiny run of this test's own, to evaluate, damage or resume."""
    return copy_run(tiny_run, tmp_path / "tiny-run")
