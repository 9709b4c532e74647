"""The feature cache never holds wrong data silently: full disks, flipped bytes, changed videos.

Full disks are real: a 3 MB tmpfs mounted for the test (CI runs as root). Where mounting is refused the
extract test falls back to an injected ENOSPC and says so; the other full-disk tests are skipped there.
"""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import TINY, extract_tiny, flip_a_feature_byte, invoke
from ucfpipe.cache import format as cache_format
from ucfpipe.cache import writer
from ucfpipe.cache.format import MANIFEST
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import ExtractConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json
from ucfpipe.stage_one import extract
from ucfpipe.stage_one.merge import merge

# pooling "none" keeps the 1x1x512 map of 32x32 frames: shards of ~0.6 MB, so a 3 MB disk fills mid-run.
BIG = {**TINY, "pooling": "none", "shard_clips": 16}
QUIET = {"progress": False, "log": lambda *_: None}


def config(dataset, out, **changes) -> ExtractConfig:
    return ExtractConfig(videos=str(dataset["videos"]), splits=str(dataset["splits"]), out=str(out), **{**BIG, **changes})


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB file system, or None where this machine refuses to mount one."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def grow(mount_point: Path) -> None:
    """'Free space': give the file system room for the whole cache."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)


def assert_same_cache(found: Path, expected: Path) -> None:
    """The same clips, labels and fingerprint, and features within one unit in the last place of the stored
    float16 (not bit for bit: clips re-extracted in another batch go through the backbone's kernels in
    another order, and a float32 sum rounded anew can land on the neighbouring float16)."""
    a, b = FeatureStore(found), FeatureStore(expected)
    assert a.video_ids == b.video_ids and a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.labels(a.video_ids), b.labels(b.video_ids))
    x, y = a.features(a.video_ids, view=None), b.features(b.video_ids, view=None)
    assert x.dtype == y.dtype
    ulp = np.spacing(np.maximum(np.abs(x), np.abs(y)).astype(x.dtype)).astype(np.float64)
    assert np.all(np.abs(x.astype(np.float64) - y.astype(np.float64)) <= ulp)


@pytest.fixture(scope="module")
def clean_big(synth_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "features"
    extract.run(config(synth_dataset, out), **QUIET)
    return out


# -- full disks -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_disk_during_extract_is_one_line_and_a_rerun_ends_with_the_clean_cache(synth_dataset, clean_big, small_disk,
                                                                                    tmp_path, monkeypatch, warm):
    if small_disk is None:
        pytest.skip("mount refused here: see test_injected_enospc_when_no_tmpfs_can_be_mounted")
    out = small_disk / "features"
    toml = tmp_path / "extract.toml"
    toml.write_text("shard_clips = 16\n")
    flags = ["--config", toml, "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--out", out,
             "--no-progress", *[f for k, v in BIG.items() if k != "shard_clips" for f in (f"--{k.replace('_', '-')}", v)]]
    # A real process (started warm, and ending through the interpreter's exit as any does): the crash of the issue
    # (exit 139) happened at interpreter exit, after the error line.
    done = warm.run(["extract", *flags], timeout=600)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "no space left on the device of" in errors[0] and "it needs about" in errors[0]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert not list(out.glob("*.tmp"))
    written = sorted(out.glob("shard-*.h5"))
    assert 0 < len(written) < 108 // 16  # the disk filled mid-run, after some shards
    for shard in written:  # whatever took a shard's name is whole: every checksum reads
        assert cache_format.verify_shard(shard) is None
        with h5py.File(shard) as handle:
            stored = np.abs(handle["features"][()].astype(np.float32))
            assert stored.sum(axis=tuple(range(1, stored.ndim))).min() > 0  # no clip of zeros
    grow(small_disk)
    again = invoke("extract", *flags, exit_code=0)  # the rerun, in this process: what it finds is what is tested
    assert f"{108 - 16 * len(written)} clips" in again.output
    assert_same_cache(out, clean_big)


@pytest.mark.slow
def test_injected_enospc_when_no_tmpfs_can_be_mounted(synth_dataset, clean_big, tmp_path, monkeypatch):
    """The same guarantee, in process, with ENOSPC raised by the shard's write; this one runs everywhere."""
    out = tmp_path / "features"
    real, written = writer._write_file, []

    def full_after_two(path, data):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, data)

    monkeypatch.setattr(writer, "_write_file", full_after_two)
    with pytest.raises(UcfpipeError, match=r"no space left on the device of .*shard-00002\.h5 \(it needs about"):
        extract.run(config(synth_dataset, out), **QUIET)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.h5", "shard-00001.h5"]
    monkeypatch.setattr(writer, "_write_file", real)
    assert extract.run(config(synth_dataset, out), **QUIET)["extracted"] == 108 - 32
    assert_same_cache(out, clean_big)


def test_full_disk_when_writing_the_manifest_keeps_no_half_manifest(synth_dataset, small_disk):
    if small_disk is None:
        pytest.skip("mount refused here (the shard write's ENOSPC is covered by the injected test)")
    out = small_disk / "features"
    extract_tiny(synth_dataset, out)  # avg pooling: small enough for the disk
    (out / MANIFEST).unlink()
    filler = small_disk / "filler"
    handle = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(handle, b"\0" * 4096):
            pass
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(handle)
    with pytest.raises(UcfpipeError, match=r"no space left on the device of .*manifest\.json"):
        extract_tiny(synth_dataset, out)
    assert not (out / MANIFEST).exists() and not list(out.glob("*.tmp"))
    filler.unlink()
    extract_tiny(synth_dataset, out)
    assert len(FeatureStore(out)) == synth_dataset["num_clips"]


def test_merge_onto_a_full_disk_leaves_nothing_then_succeeds(synth_dataset, clean_big, small_disk, tmp_path):
    if small_disk is None:
        pytest.skip("mount refused here")
    parts = [tmp_path / f"part{i}" for i in range(2)]
    for index, part in enumerate(parts):
        extract.run(config(synth_dataset, part, shard=f"{index}/2"), **QUIET)
    out = small_disk / "merged"
    with pytest.raises(UcfpipeError, match=r"no space left on the device of .*merged\.merging/shard-\d+\.h5"):
        merge(parts, out)
    assert sorted(p.name for p in small_disk.iterdir()) == []
    grow(small_disk)
    merge(parts, out)
    assert_same_cache(out, clean_big)




@pytest.mark.slow  # a whole stage-one pipeline (extracts, checks, re-extracts): make test
def test_a_flipped_byte_is_refused_by_readers_found_by_check_and_re_extracted(synth_dataset, synth_cache, tmp_path):
    out = tmp_path / "features"
    shutil.copytree(synth_cache, out)
    manifest = json.loads((out / MANIFEST).read_text())
    name = manifest["shards"][0]
    with h5py.File(out / name) as handle:
        damaged_ids = handle["video_id"].asstr()[()].tolist()
    flip_a_feature_byte(out / name, row=3)

    store = FeatureStore(out)  # opening reads only per-clip metadata; the damaged clip's read is refused
    with pytest.raises(UcfpipeError, match=rf"{name} is damaged .*check --features"):
        store.features(store.video_ids)
    assert "Traceback" not in (result := invoke("check", "--features", out)).output
    assert result.exit_code == 3 and f"damaged: {name}: SHA-256 differs" in result.output
    assert invoke("check", "--features", synth_cache).exit_code == 0

    lines = []
    summary = extract.run(ExtractConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]),
                                        out=str(out), **TINY), progress=False, log=lines.append)
    assert summary["extracted"] == len(damaged_ids) and summary["damaged"] == len(damaged_ids)
    assert any(f"{name} is damaged" in line and f"moved to {out / 'damaged' / name}" in line for line in lines)
    assert any(f"{len(damaged_ids)} of damaged shards" in line for line in lines)
    assert (out / "damaged" / name).is_file()
    assert invoke("check", "--features", out).exit_code == 0
    assert_same_cache(out, synth_cache)


def test_a_truncated_or_missing_shard_is_refused_when_the_store_opens(synth_cache, tmp_path):
    out = tmp_path / "features"
    shutil.copytree(synth_cache, out)
    name = json.loads((out / MANIFEST).read_text())["shards"][0]
    with (out / name).open("r+b") as handle:
        handle.truncate((out / name).stat().st_size - 100)
    with pytest.raises(UcfpipeError, match=rf"{name} is damaged \(\d+ bytes, the manifest says \d+\)"):
        FeatureStore(out)
    (out / name).unlink()
    with pytest.raises(UcfpipeError, match=rf"{name} is damaged \(missing\)"):
        FeatureStore(out)
    result = invoke("check", "--features", out)
    assert result.exit_code == 3 and f"missing: {name}" in result.output


def test_a_format_1_cache_is_still_read_and_check_says_it_has_no_checksums(synth_cache, tmp_path):
    out = tmp_path / "features"
    shutil.copytree(synth_cache, out)
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["checksums"]
    manifest["format"] = "ucfpipe-features/1"
    write_json(out / MANIFEST, manifest)
    assert len(FeatureStore(out)) == len(FeatureStore(synth_cache))
    result = invoke("check", "--features", out)
    assert result.exit_code == 0 and "format ucfpipe-features/1 has no checksums" in result.output


# -- changed videos ---------------------------------------------------------------------------------------
@pytest.mark.slow  # a whole stage-one pipeline (extracts, checks, re-extracts): make test
def test_a_replaced_video_is_listed_by_check_and_re_extracted(synth_dataset, tmp_path):
    videos = tmp_path / "UCF-101"
    shutil.copytree(synth_dataset["videos"], videos)
    dataset = {**synth_dataset, "videos": videos}
    out = extract_tiny(dataset, tmp_path / "features")
    clips = sorted(videos.glob("*/*.avi"))
    replaced, source, touched = clips[4], clips[40], clips[7]
    shutil.copyfile(source, replaced)  # another clip's file: other size, other frames
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))  # same bytes, new mtime
    replaced_id = f"{replaced.parent.name}/{replaced.stem}"
    source_id = f"{source.parent.name}/{source.stem}"

    result = invoke("check", "--features", out, "--videos", videos)
    assert result.exit_code == 3, result.output
    assert [line for line in result.output.splitlines() if line.startswith("changed:")] == [
        f"changed: {replaced_id}: size {synth_size(synth_dataset, replaced)} -> {source.stat().st_size} bytes"]

    lines = []
    summary = extract.run(ExtractConfig(videos=str(videos), splits=str(synth_dataset["splits"]), out=str(out), **TINY),
                          progress=False, log=lines.append)
    assert list(summary["changed"]) == [replaced_id] and summary["extracted"] == 1
    assert any("1 whose video changed" in line for line in lines)
    store = FeatureStore(out)
    assert len(store) == synth_dataset["num_clips"] and len(set(store.video_ids)) == len(store.video_ids)
    # The new row is the new file's features (identical frames to the clip it was copied from).
    np.testing.assert_array_equal(store.features([replaced_id]), store.features([source_id]))
    assert invoke("check", "--features", out, "--videos", videos).exit_code == 0
    assert extract.run(ExtractConfig(videos=str(videos), splits=str(synth_dataset["splits"]), out=str(out), **TINY),
                       **QUIET)["extracted"] == 0


def test_check_lists_a_cached_clip_whose_video_was_deleted(synth_dataset, synth_cache, tmp_path):
    videos = tmp_path / "UCF-101"
    shutil.copytree(synth_dataset["videos"], videos)  # copy2 keeps sizes and mtimes: the cache's videos, unchanged
    assert invoke("check", "--features", synth_cache, "--videos", videos).exit_code == 0
    gone = sorted(videos.glob("*/*.avi"))[5]
    gone.unlink()
    gone_id = f"{gone.parent.name}/{gone.stem}"

    result = invoke("check", "--features", synth_cache, "--videos", videos)
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.startswith("deleted:")] == [
        f"deleted: {gone_id}: no video at {gone}"]
    assert "0 clips changed, 1 videos deleted" in result.output
    assert f"1 cached clips have no video under {videos} any more (e.g. {gone_id})" in result.output


def synth_size(dataset, path: Path) -> int:
    return (Path(dataset["videos"]) / path.parent.name / path.name).stat().st_size


def test_an_interrupted_rewrite_is_finished_by_the_next_run(synth_dataset, synth_cache, tmp_path):
    """A shard rewritten without a changed clip replaces the old one; if the run died before deleting the
    old one, the next opening deletes it rather than calling the cache corrupt."""
    out = tmp_path / "features"
    shutil.copytree(synth_cache, out)
    name = json.loads((out / MANIFEST).read_text())["shards"][0]
    clips = cache_format.read_shard(out / name)
    writer.write_shard(out / "shard-00099.h5", clips[1:], FeatureStore(out).fingerprint,
                         FeatureStore(out).settings, replaces=name)
    summary = extract.run(ExtractConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]),
                                        out=str(out), **TINY), **QUIET)
    assert summary["extracted"] == 1 and not (out / name).exists()
    assert_same_cache(out, synth_cache)


def test_synth_refuses_a_non_empty_target_unless_replace(tmp_path):
    target = tmp_path / "data"
    flags = ["--classes", 2, "--groups", 3, "--clips-per-group", 1]
    assert invoke("synth", target, *flags).exit_code == 0
    stray = target / "UCF-101" / "GrowingDisk" / "v_GrowingDisk_g09_c09.avi"
    stray.write_bytes(b"from an earlier, larger dataset")
    refused = invoke("synth", target, *flags)
    assert refused.exit_code == 2 and "is not empty" in refused.output and "--replace" in refused.output
    assert stray.exists()
    replaced = invoke("synth", target, *flags, "--replace")
    assert replaced.exit_code == 0, replaced.output
    assert not stray.exists() and len(list((target / "UCF-101").glob("*/*.avi"))) == 6


# -- check's messages -------------------------------------------------------------------------------------
def raw_mpeg4_stream(path: Path, frames: int = 30) -> None:
    """An MPEG-4 Part 2 elementary stream with no container (as some tools save it), named .avi."""
    import struct

    import cv2

    avi = path.with_name("container.avi")
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 8, np.uint8))
    writer.release()
    data, stream = avi.read_bytes(), bytearray()
    avi.unlink()
    position = data.index(b"movi") + 4
    while position + 8 <= len(data) and data[position : position + 4] != b"idx1":
        size = struct.unpack("<I", data[position + 4 : position + 8])[0]
        if data[position + 2 : position + 4] in (b"dc", b"db"):
            stream += data[position + 8 : position + 8 + size]
        position += 8 + size + (size & 1)
    path.write_bytes(bytes(stream))


def test_check_lets_the_decoder_judge_a_raw_mpeg4_stream(synth_dataset, tmp_path):
    videos = tmp_path / "UCF-101"
    shutil.copytree(synth_dataset["videos"], videos)
    clip = sorted(videos.glob("*/*.avi"))[2]
    raw_mpeg4_stream(clip)
    assert clip.read_bytes()[:4] == b"\x00\x00\x01\xb0"  # no container signature at all
    result = invoke("check", "--videos", videos, "--splits", synth_dataset["splits"], "--frames", 8)
    assert result.exit_code == 0, result.output
    assert f"checked {synth_dataset['num_clips']} clips: 0 unusable" in result.output


def test_check_says_what_extract_does_with_unreadable_clips(synth_dataset, tmp_path):
    videos = tmp_path / "UCF-101"
    shutil.copytree(synth_dataset["videos"], videos)
    sorted(videos.glob("*/*.avi"))[2].write_text("not a video\n")
    result = invoke("check", "--videos", videos, "--splits", synth_dataset["splits"], "--frames", 8)
    assert result.exit_code == 3
    assert "--allow-missing" not in result.output
    assert "extract skips the 1 unreadable ones, lists them under 'failed' in the manifest" in result.output


def test_a_moved_cache_points_at_features(tmp_path):
    with pytest.raises(UcfpipeError, match="if the cache moved, pass its new directory with --features"):
        FeatureStore(tmp_path / "gone")
