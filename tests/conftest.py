"""Shared fixtures: the genuine clips in ../shared, a synthetic dataset, and a tiny feature cache of it.

Sizes are tiny on purpose (32x32 frames, T=8, random VGG16 weights): the suite must stay fast on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_UCF101 = REPO.parent / "shared" / "ucf101"
TINY = {"frames": 8, "size": 32, "weights": "none", "batch_size": 64, "workers": 2, "seed": 0}


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
    from ucfpipe.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), num_classes=6, num_groups=6, clips_per_group=3, seed=0)


def extract_tiny(dataset: dict, out: Path, **changes) -> Path:
    """`dataset` through stage one at the TINY settings (plus `changes`) into `out`; every clip must extract."""
    from ucfpipe import extract
    from ucfpipe.config import ExtractConfig

    config = ExtractConfig(videos=str(dataset["videos"]), splits=str(dataset["splits"]), out=str(out), **{**TINY, **changes})
    summary = extract.run(config, progress=False, log=lambda *_: None)
    assert not summary["failed"], summary["failed"]
    return out


@pytest.fixture(scope="session")
def synth_cache(synth_dataset, tmp_path_factory) -> Path:
    """The synthetic dataset through stage one at tiny size. Read-only for tests: copy it to modify."""
    return extract_tiny(synth_dataset, tmp_path_factory.mktemp("cache") / "features")
