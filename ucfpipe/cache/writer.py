"""The feature cache: HDF5 shards plus a manifest written last. The format is documented in docs/cache-format.md.
This module writes it; `cache.format` owns what a shard holds, `cache.store` reads a finished cache.

Safety rules that make interruption, full disks and damage harmless:
- a shard is built in memory, written to a temporary (`core.files.replacing`), read back and compared, synced,
  and only then renamed, so a file named `shard-*.h5` is always whole; a full disk costs the shard being written, nothing else;
- every dataset carries HDF5's fletcher32 checksum (checked on every read) and the file's metadata carries
  HDF5's own checksums (libver "latest"); the manifest holds each shard's SHA-256 and size;
- shards are immutable and a clip goes into exactly one shard; a resumed run skips clips already in a
  shard that verifies, moves damaged shards aside, and rewrites (under a new name) shards holding clips
  whose video changed;
- every shard carries the fingerprint of the settings that made it, so different settings never mix;
- the manifest is written last (also atomically), and a cache without one is reported as incomplete;
  a run that removes or rewrites shards deletes the manifest first, so no manifest ever lists a missing shard;
- one writer at a time, enforced by an OS lock that dies with its process (so `kill -9` leaves no stale lock).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ucfpipe.cache.format import (
    DAMAGED,
    FORMAT,
    LOCK,
    MANIFEST,
    SHARD_GLOB,
    ClipFeatures,
    clip_sources,
    describe_difference,
    encode_shard,
    feature_shape,
    file_sha256,
    read_manifest,
    read_shard,
    read_strings,
    shard_name,
    shard_number,
    verify_shard,
)
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import clear_stale, replacing, write_json
from ucfpipe.core.locks import locked


def _write_file(path: Path, data: bytes) -> None:
    """The one place a shard's bytes reach the disk: kept apart so the injected-ENOSPC test (for machines that
    refuse a tmpfs mount) can fail exactly this write."""
    path.write_bytes(data)



def write_shard(path: Path, clips: list[ClipFeatures], fingerprint: str, settings: dict, replaces: str = "") -> dict:
    """Write `clips` as the shard `path`; it takes its final name only once it is on disk and reads back
    whole and equal. Returns the manifest's record of it: {"sha256", "bytes", "clips"}."""
    image = encode_shard(clips, fingerprint, settings, replaces)
    sha256 = hashlib.sha256(image).hexdigest()
    with replacing(path, needed=len(image)) as tmp:
        _write_file(tmp, image)
        if file_sha256(tmp) != sha256 or not _same_clips(read_shard(tmp), clips, settings["dtype"]):
            raise UcfpipeError(f"{tmp} does not read back as written (a failing disk?); nothing was renamed, rerun to retry")
    return {"sha256": sha256, "bytes": len(image), "clips": len(clips)}


def _same_clips(found: list[ClipFeatures], expected: list[ClipFeatures], dtype: str) -> bool:
    return len(found) == len(expected) and all(
        a.video_id == b.video_id and a.label == b.label and a.source == b.source
        and np.array_equal(a.frame_indices, b.frame_indices)
        and np.array_equal(a.features, b.features.astype(dtype, copy=False), equal_nan=True)
        for a, b in zip(found, expected)
    )



class ShardWriter:
    """Buffers finished clips and writes them as immutable shards. Use through `open_for_writing`.

    Opening verifies what is there: shards that fail their SHA-256 (or, newer than the manifest, their
    fletcher32 checksums) are moved to `damaged/` and their clips extracted again."""

    def __init__(self, directory: Path, fingerprint: str, settings: dict, shard_clips: int, shard_seconds: float, log=None):
        self.directory = directory
        self.fingerprint = fingerprint
        self.settings = settings
        self.shard_clips = shard_clips
        self.shard_seconds = shard_seconds
        self.log = log or (lambda *_: None)
        self._buffer: list[ClipFeatures] = []
        self._last_flush = time.monotonic()
        self.done_ids: set[str] = set()
        self.shards: list[str] = []
        self.checksums: dict[str, dict] = {}
        self.damaged_clips = 0  # clips of shards found damaged by this run's scan (extracted again)
        manifest = read_manifest(directory) or {}
        known = manifest.get("checksums", {}) if manifest.get("fingerprint") == fingerprint else {}
        gone = [name for name in manifest.get("shards", []) if not (directory / name).exists()] if known else []
        if gone:
            self.invalidate_manifest()
            self.damaged_clips += sum(known.get(name, {}).get("clips", 0) for name in gone)
            self.log(f"{len(gone)} shards the manifest lists are missing (e.g. {gone[0]}); "
                     "their clips will be extracted again")
        found: list[tuple[Path, list[str], str]] = []
        for path in sorted(directory.glob(SHARD_GLOB)):
            problem = verify_shard(path, known.get(path.name))
            if problem:
                self._move_aside(path, problem, known.get(path.name, {}).get("clips"))
                continue
            with h5py.File(path, "r") as shard:
                if shard.attrs.get("fingerprint") != fingerprint:
                    old = json.loads(shard.attrs.get("settings", "{}"))
                    raise UcfpipeError(
                        f"{directory} holds features made with other settings ({describe_difference(old, settings)}); "
                        "use another --out directory, or delete this one to re-extract"
                    )
                found.append((path, read_strings(shard["video_id"]), str(shard.attrs.get("replaces", ""))))
        names = {path.name for path, _, _ in found}
        for path, _, replaces in found:
            if replaces in names:  # a rewrite finished but its original was not deleted yet: finish that
                self.invalidate_manifest()
                (directory / replaces).unlink()
                names.discard(replaces)
        for path, ids, _ in found:
            if path.name not in names:
                continue
            duplicated = self.done_ids.intersection(ids)
            if duplicated:
                raise UcfpipeError(f"{path} repeats clips of other shards (e.g. {sorted(duplicated)[0]}); the cache is corrupt, delete it")
            self.done_ids.update(ids)
            self.shards.append(path.name)
            self.checksums[path.name] = known.get(path.name) or {
                "sha256": file_sha256(path), "bytes": path.stat().st_size, "clips": len(ids)}

    def invalidate_manifest(self) -> None:
        """Called before shards are removed or rewritten: a manifest must never list a shard that is gone."""
        (self.directory / MANIFEST).unlink(missing_ok=True)

    def _move_aside(self, path: Path, problem: str, clips: int | None) -> None:
        self.invalidate_manifest()
        try:  # the ids may still read (damage elsewhere in the file): then we know how many clips it held
            with h5py.File(path, "r") as shard:
                clips = len(shard["video_id"])
        except Exception:
            pass
        aside = self.directory / DAMAGED
        aside.mkdir(exist_ok=True)
        target = aside / path.name
        suffix = 1
        while target.exists():
            target, suffix = aside / f"{path.name}.{suffix}", suffix + 1
        os.replace(path, target)
        self.damaged_clips += clips or 0
        self.log(f"{path.name} is damaged ({problem}): moved to {target}; "
                 f"its {clips if clips is not None else 'unknown number of'} clips will be extracted again")

    def drop_changed(self, videos: Path) -> dict[str, str]:
        """Forget clips whose video under `videos` changed since extraction ({video_id: how}): each shard
        holding some is rewritten without them under a new name (shards stay immutable), then deleted."""
        changed: dict[str, str] = {}
        by_shard: dict[str, set[str]] = {}
        for name in self.shards:
            for clip_id, source in clip_sources(self.directory / name):
                how = source.change(videos) if source else None
                if how:
                    changed[clip_id] = how
                    by_shard.setdefault(name, set()).add(clip_id)
        if changed:
            self.invalidate_manifest()
        for name, ids in by_shard.items():
            keep = [clip for clip in read_shard(self.directory / name) if clip.video_id not in ids]
            if keep:
                new = shard_name(self._next_number())
                self.checksums[new] = write_shard(self.directory / new, keep, self.fingerprint, self.settings, replaces=name)
                self.shards.append(new)
            (self.directory / name).unlink()
            self.shards.remove(name)
            del self.checksums[name]
            self.done_ids -= ids
        return changed

    def _next_number(self) -> int:
        return max([shard_number(name) for name in self.shards], default=-1) + 1

    def add(self, clip: ClipFeatures) -> None:
        if clip.video_id in self.done_ids:
            raise RuntimeError(f"clip {clip.video_id} extracted twice")  # a bug, never a user error
        self._buffer.append(clip)
        self.done_ids.add(clip.video_id)
        if len(self._buffer) >= self.shard_clips or time.monotonic() - self._last_flush > self.shard_seconds:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        clips, self._buffer = self._buffer, []
        name = shard_name(self._next_number())
        try:
            self.checksums[name] = write_shard(self.directory / name, clips, self.fingerprint, self.settings)
        except BaseException:
            self.done_ids -= {clip.video_id for clip in clips}  # not stored: a later flush must not count them
            raise
        self.shards.append(name)



@contextmanager
def open_for_writing(directory: str | Path, fingerprint: str, settings: dict, shard_clips: int = 128,
                     shard_seconds: float = 120.0, log=None):
    """Lock the cache directory, check it holds only features of these settings, and yield a ShardWriter."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UcfpipeError(f"cannot write the feature cache at {directory}: {err.strerror}; choose a writable --out") from None
    with locked(directory / LOCK, f"feature cache {directory}", busy="wait for it to finish or use another --out"):
        manifest = read_manifest(directory)
        if manifest is not None and manifest.get("fingerprint") != fingerprint:
            raise UcfpipeError(
                f"{directory} holds features made with other settings "
                f"({describe_difference(manifest.get('settings', {}), settings)}); "
                "use another --out directory, or delete this one to re-extract"
            )
        clear_stale(directory, held=True)  # temporaries of a killed writer: never read as whole
        yield ShardWriter(directory, fingerprint, settings, shard_clips, shard_seconds, log)



def write_manifest(directory: Path, *, fingerprint: str, settings: dict, config: dict, versions: dict, shards: list[str],
                   checksums: dict, num_clips: int, report: dict, part: dict, **extra) -> dict:
    """The manifest, written last: it is what makes a directory of shards a finished cache."""
    manifest = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "settings": settings,
        "config": config,
        "versions": versions,
        "views": settings["views"],
        "feature_shape": feature_shape(directory, shards),
        "shards": list(shards),
        "checksums": {name: checksums[name] for name in shards},
        "num_clips": num_clips,
        "report": report,
        "part": part,
        **extra,
    }
    write_json(Path(directory) / MANIFEST, manifest, tell_size=True)  # a full disk says how much it needed
    return manifest


