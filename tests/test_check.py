"""Fault injection: killed extractions, damaged and fake videos, built from the genuine clips."""

import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from helpers import TINY, invoke
from ucfpipe.cache.store import FeatureStore
from ucfpipe.stage_one import check


def extract_args(dataset, out) -> list[str]:
    flags = [f for key, value in {**TINY, "batch_size": 16}.items() for f in (f"--{key.replace('_', '-')}", str(value))]
    return ["extract", "--videos", str(dataset["videos"]), "--splits", str(dataset["splits"]), "--out", str(out),
            "--no-progress"] + flags


def start_and_kill(warm, args, out, config, shards_before_kill: int, timeout: float = 120):
    """Start an extraction (a process of its own, started warm: the kills come once it works) and SIGKILL it once
    `shards_before_kill` shards exist (0: as soon as it runs)."""
    process = warm.start([*args, "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if len(list(out.glob("shard-*.h5*"))) >= shards_before_kill and (out / "extract.lock").exists():
            break
        time.sleep(0.02)
    finished = process.poll() is not None
    process.send_signal(signal.SIGKILL)
    process.wait()
    return finished


@pytest.mark.slow
def test_kill_9_at_several_points_then_rerun_equals_a_clean_run(synth_dataset, synth_cache, tmp_path, warm):
    out = tmp_path / "features"
    config = tmp_path / "extract.toml"
    config.write_text("shard_clips = 3\nshard_seconds = 1000.0\n")  # many small shards: many kill points
    args = extract_args(synth_dataset, out)
    for shards in (0, 2, 9, 15):
        if start_and_kill(warm, args, out, config, shards):
            break  # it finished before the kill point: nothing more to interrupt
        for path in out.glob("shard-*.h5"):  # every file under a final name is whole and readable
            with h5py.File(path, "r") as shard:
                assert shard["features"].shape[0] == len(shard["video_id"])
    invoke(*args, "--config", config, exit_code=0)  # the rerun, in this process: what it finds is what is tested
    resumed, clean = FeatureStore(out), FeatureStore(synth_cache)
    assert resumed.video_ids == clean.video_ids  # none lost, none duplicated (the store refuses duplicates)
    assert len(resumed.video_ids) == synth_dataset["num_clips"]
    assert not list(out.glob("*.tmp"))
    np.testing.assert_allclose(resumed.features(resumed.video_ids).astype(np.float32),
                               clean.features(clean.video_ids).astype(np.float32), rtol=2e-3, atol=1e-4)
    np.testing.assert_array_equal(resumed.frame_indices(resumed.video_ids), clean.frame_indices(clean.video_ids))


@pytest.fixture(scope="module")
def damaged_tree(tmp_path_factory, genuine_videos):
    """The genuine clips, plus damaged and fake ones named like UCF-101 clips of the same classes."""
    root = tmp_path_factory.mktemp("damaged")
    shutil.copytree(genuine_videos, root / "UCF-101")
    videos = root / "UCF-101"
    source = (videos / "Biking" / "v_Biking_g05_c02.avi").read_bytes()
    (videos / "Biking" / "v_Biking_g01_c01.avi").write_bytes(source[: len(source) // 3])  # truncated
    (videos / "Biking" / "v_Biking_g01_c02.avi").write_bytes(b"")  # zero bytes
    (videos / "Punch" / "v_Punch_g01_c01.avi").write_bytes(np.random.default_rng(0).bytes(50_000))  # random bytes
    (videos / "Punch" / "v_Punch_g01_c02.avi").write_text("<html>404 Not Found</html>\n")  # a text file
    (videos / "PushUps" / "v_PushUps_g01_c01.avi").write_bytes(source[:2000])  # a header and little else
    return videos


DAMAGED = {
    "Biking/v_Biking_g01_c02": "empty",
    "Punch/v_Punch_g01_c01": "not a video",
    "Punch/v_Punch_g01_c02": "not a video",
}


def test_check_names_what_is_wrong_with_each_clip(damaged_tree, official_splits):
    checked, problems = check.run(damaged_tree, official_splits, frames=40, progress=False)
    assert checked == 13320
    found = {p.video_id: p for p in problems if p.kind != "missing"}
    for video_id, kind in DAMAGED.items():
        assert found[video_id].kind == kind and found[video_id].is_error
    assert found["PushUps/v_PushUps_g01_c01"].kind in ("unreadable", "no decodable frames")
    truncated = found["Biking/v_Biking_g01_c01"]
    assert truncated.kind == "frame count misreported" and not truncated.is_error
    assert "container says 201" in truncated.detail
    assert "PushUps/v_PushUps_g02_c03" not in found  # 79 genuine frames >= T = 40 and an honest header
    short = {p.video_id for p in check.run(damaged_tree, official_splits, frames=110, progress=False)[1]
             if p.kind == "fewer frames than asked"}
    assert {"PushUps/v_PushUps_g02_c03", "Punch/v_Punch_g03_c01", "BaseballPitch/v_BaseballPitch_g01_c01"} <= short
    missing = [p for p in problems if p.kind == "missing"]
    assert len(missing) == 13320 - 11
