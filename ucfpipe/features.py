"""The feature cache: HDF5 shards plus a manifest written last. The format is documented in features/README.md.
This module is the format's one owner: shard names, shard contents, manifests and their checks live here.

Safety rules that make interruption, full disks and damage harmless:
- a shard is built in memory, written to a temporary (`atomic.replacing`), read back and compared, synced,
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

import fcntl
import hashlib
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .atomic import replacing, write_json
from .errors import UcfpipeError

FORMAT = "ucfpipe-features/2"
UNCHECKSUMMED_FORMATS = ("ucfpipe-features/1",)  # still read: same datasets, no checksums (see README)
MANIFEST = "manifest.json"
LOCK = "extract.lock"
SHARD_GLOB = "shard-*.h5"
DAMAGED = "damaged"  # damaged shards are moved here (a rename: it needs no space), never read again
FINGERPRINT_BYTES = 64 * 1024  # a video's content fingerprint hashes this much of each end


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.h5"


def shard_number(name: str) -> int:
    return int(name[6:11])


@dataclass(frozen=True)
class Source:
    """What a clip's features were computed from: the video's path under --videos, size, mtime and a cheap
    content fingerprint (SHA-256 of the size and the first and last 64 KiB)."""

    path: str
    size: int
    mtime_ns: int
    digest: str

    @classmethod
    def of(cls, videos: Path, relative: str) -> "Source":
        path = Path(videos) / relative
        stat = path.stat()
        return cls(relative, stat.st_size, stat.st_mtime_ns, _content_digest(path, stat.st_size))

    def change(self, videos: Path) -> str | None:
        """Why the file under `videos` is not the one extracted, or None. Size and mtime decide cheaply
        (as make and rsync do); a new mtime alone is confirmed by the content fingerprint, so a copied
        or regenerated identical file is not a change."""
        path = Path(videos) / self.path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None  # a missing video is reported by plan/check, not a change of the cached clip
        if stat.st_size != self.size:
            return f"size {self.size} -> {stat.st_size} bytes"
        if stat.st_mtime_ns != self.mtime_ns and _content_digest(path, stat.st_size) != self.digest:
            return "same size, different content"
        return None


def _content_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


@dataclass
class ClipFeatures:
    """One clip as stored: `views` axis first, so `features[v]` is the (T, ...) sequence of view v."""

    video_id: str
    label: int
    group: int
    num_frames: int  # frames decoding found in the clip
    fps: float
    frame_indices: np.ndarray  # (V, T) int32
    features: np.ndarray  # (V, T, *feature_shape)
    source: Source | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    """The one place a shard's bytes reach the disk: kept apart so the injected-ENOSPC test (for machines that
    refuse a tmpfs mount) can fail exactly this write."""
    path.write_bytes(data)


def write_json_atomic(path: Path, data) -> None:
    """Readers see the old file or the new one, never half of one; a full disk leaves the old file and says how
    much the file needed."""
    write_json(path, data, tell_size=True)


def describe_difference(first: dict, second: dict, first_is: str = "in cache vs", second_is: str = "now") -> str:
    """The one "settings differ" text (extract, eval, predict): each setting whose value differs, as
    "KEY: FIRST first_is SECOND second_is", e.g. "frames: 8 in cache vs 16 now", joined by "; "."""
    keys = sorted(set(first) | set(second))
    diffs = [f"{k}: {first.get(k)!r} {first_is} {second.get(k)!r} {second_is}" for k in keys if first.get(k) != second.get(k)]
    return "; ".join(diffs) or "identical settings, different fingerprint"


# -- one shard --------------------------------------------------------------------------------------------
_PER_CLIP = ("label", "group", "num_frames", "fps")
_PER_CLIP_DTYPES = {"label": np.int32, "group": np.int32, "num_frames": np.int32, "fps": np.float32}


def _fixed_strings(values: list[str]) -> tuple[list[bytes], object]:
    """Fixed-length UTF-8 (fletcher32 covers its bytes; variable-length strings live outside the checksum)."""
    encoded = [v.encode() for v in values]
    length = max(1, max(map(len, encoded)))
    return encoded, h5py.string_dtype("utf-8", length)  # a list: h5py will not convert an "S" array to UTF-8


def encode_shard(clips: list[ClipFeatures], fingerprint: str, settings: dict, replaces: str = "") -> bytes:
    """The shard as an in-memory HDF5 file image. HDF5 never writes to disk here, so a full disk cannot
    leave a half-closed HDF5 file behind (that is what crashed the interpreter at exit)."""
    buffer = io.BytesIO()
    dtype = np.dtype(settings["dtype"])
    with h5py.File(buffer, "w", libver="latest") as shard:  # "latest": checksummed metadata
        shard.attrs["format"] = FORMAT
        shard.attrs["fingerprint"] = fingerprint
        shard.attrs["settings"] = json.dumps(settings, sort_keys=True)
        if replaces:
            shard.attrs["replaces"] = replaces  # a rewrite of that shard: the scan deletes it if still there

        def put(name, data, dtype=None):
            shard.create_dataset(name, data=data, dtype=dtype, fletcher32=True)

        for name, values in (("video_id", [c.video_id for c in clips]),
                             ("source_path", [c.source.path if c.source else "" for c in clips]),
                             ("source_digest", [c.source.digest if c.source else "" for c in clips])):
            put(name, *_fixed_strings(values))
        for key in _PER_CLIP:
            put(key, np.array([getattr(c, key) for c in clips], _PER_CLIP_DTYPES[key]))
        put("source_size", np.array([c.source.size if c.source else -1 for c in clips], np.int64))
        put("source_mtime_ns", np.array([c.source.mtime_ns if c.source else -1 for c in clips], np.int64))
        put("frame_indices", np.stack([c.frame_indices for c in clips]).astype(np.int32))
        shape = (len(clips),) + clips[0].features.shape
        # One clip per chunk: readers fetch whole clips, in any order; written clip by clip (no stacked copy).
        features = shard.create_dataset("features", shape=shape, dtype=dtype, chunks=(1,) + shape[1:], fletcher32=True)
        for row, clip in enumerate(clips):
            features[row] = clip.features.astype(dtype, copy=False)
    return buffer.getvalue()


def _strings(dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in dataset[()]]


def read_shard(path: Path) -> list[ClipFeatures]:
    """Every clip of a shard (reading checks every fletcher32 checksum)."""
    with h5py.File(path, "r") as shard:
        ids = _strings(shard["video_id"])
        meta = {key: shard[key][()] for key in _PER_CLIP + ("frame_indices", "features")}
        sources = [None] * len(ids)
        if "source_path" in shard:
            paths, digests = _strings(shard["source_path"]), _strings(shard["source_digest"])
            sizes, mtimes = shard["source_size"][()], shard["source_mtime_ns"][()]
            sources = [Source(p, int(s), int(m), d) if p else None for p, s, m, d in zip(paths, sizes, mtimes, digests)]
    return [
        ClipFeatures(video_id, int(meta["label"][i]), int(meta["group"][i]), int(meta["num_frames"][i]),
                     float(meta["fps"][i]), meta["frame_indices"][i], meta["features"][i], sources[i])
        for i, video_id in enumerate(ids)
    ]


def verify_shard(path: Path, expected: dict | None = None) -> str | None:
    """What is wrong with a shard file, or None. With the manifest's record (`sha256`, `bytes`) the
    SHA-256 decides; without one (a shard newer than the manifest, or an old-format cache) every dataset
    is read, which checks every fletcher32 checksum and HDF5's metadata checksums."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if expected:
        if size != expected["bytes"]:
            return f"{size} bytes, the manifest says {expected['bytes']}"
        if file_sha256(path) != expected["sha256"]:
            return "SHA-256 differs from the manifest's"
        return None
    try:
        with h5py.File(path, "r") as shard:
            for name in shard:
                dataset = shard[name]
                for start in range(0, max(len(dataset), 1), 64):
                    dataset[start : start + 64]
    except Exception as err:  # h5py reports damage as OSError, RuntimeError, KeyError or ValueError
        return f"unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


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


# -- writing a cache ----------------------------------------------------------------------------------------
def _read_manifest(directory: Path) -> dict | None:
    """The manifest, or None when there is none or it is not valid JSON (the run rewrites it at the end)."""
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


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
        manifest = _read_manifest(directory) or {}
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
                found.append((path, _strings(shard["video_id"]), str(shard.attrs.get("replaces", ""))))
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


def clip_sources(path: Path) -> list[tuple[str, Source | None]]:
    """[(video_id, the Source its features were computed from)] of one shard (None in format-1 shards)."""
    with h5py.File(path, "r") as shard:
        ids = _strings(shard["video_id"])
        if "source_path" not in shard:
            return [(video_id, None) for video_id in ids]
        paths, digests = _strings(shard["source_path"]), _strings(shard["source_digest"])
        sizes, mtimes = shard["source_size"][()], shard["source_mtime_ns"][()]
    return [(video_id, Source(p, int(s), int(m), d) if p else None)
            for video_id, p, s, m, d in zip(ids, paths, sizes, mtimes, digests)]


@contextmanager
def open_for_writing(directory: str | Path, fingerprint: str, settings: dict, shard_clips: int = 128,
                     shard_seconds: float = 120.0, log=None):
    """Lock the cache directory, check it holds only features of these settings, and yield a ShardWriter."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / LOCK, "a+")
    except OSError as err:
        raise UcfpipeError(f"cannot write the feature cache at {directory}: {err.strerror}; choose a writable --out") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UcfpipeError(
            f"another ucfpipe extract is writing to {directory}; wait for it to finish or use another --out"
        ) from None
    try:
        manifest = _read_manifest(directory)
        if manifest is not None and manifest.get("fingerprint") != fingerprint:
            raise UcfpipeError(
                f"{directory} holds features made with other settings "
                f"({describe_difference(manifest.get('settings', {}), settings)}); "
                "use another --out directory, or delete this one to re-extract"
            )
        for stale in directory.glob("*.tmp"):  # left by a killed writer; never read as whole
            stale.unlink()
        yield ShardWriter(directory, fingerprint, settings, shard_clips, shard_seconds, log)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def feature_shape(directory: Path, shards: list[str]) -> list[int]:
    """The per-frame feature shape F, as stored (features are (N, V, T, *F))."""
    if not shards:
        return []
    with h5py.File(Path(directory) / shards[0], "r") as shard:
        return list(shard["features"].shape[3:])


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
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest


# -- reading a cache ----------------------------------------------------------------------------------------
class FeatureStore:
    """Read-only access to a finished feature cache: `FeatureStore(dir)`.

    >>> store = FeatureStore("features/ucf101")
    >>> x = store.features(store.video_ids[:8])        # (8, T, 512) for the first view

    Damage is refused with one line naming the shard: shard sizes are checked against the manifest on
    opening and HDF5 checks every fletcher32 checksum on every read. The full SHA-256 of every shard is
    left to `ucfpipe check --features` and to extract's resume scan (hashing the whole cache at each
    opening would cost seconds per GB, every time a run starts)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            if any(self.directory.glob(SHARD_GLOB)):
                raise UcfpipeError(
                    f"feature cache {self.directory} is incomplete (extraction was interrupted or is running); "
                    "rerun the same `ucfpipe extract` command to finish it"
                )
            raise UcfpipeError(
                f"no feature cache at {self.directory}: if the cache moved, pass its new directory with --features; "
                f"else run `ucfpipe extract --out {self.directory}` first"
            )
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UcfpipeError(f"{manifest_path} is not valid JSON; rerun `ucfpipe extract` to rewrite it") from None
        if self.manifest.get("format") not in (FORMAT,) + UNCHECKSUMMED_FORMATS:
            raise UcfpipeError(
                f"{self.directory} is not a {FORMAT} cache (format {self.manifest.get('format')!r}); "
                "extract it again into a new directory with this version of ucfpipe"
            )
        self._files: dict[str, h5py.File] = {}
        self._where: dict[str, tuple[str, int]] = {}
        checksums = self.checksums
        meta: dict[str, list] = {k: [] for k in ("video_id", "label", "group", "num_frames", "fps")}
        for name in self.manifest["shards"]:
            path = self.directory / name
            if not path.is_file():
                raise self.damaged(name, "missing")
            if name in checksums and path.stat().st_size != checksums[name]["bytes"]:
                raise self.damaged(name, f"{path.stat().st_size} bytes, the manifest says {checksums[name]['bytes']}")
            shard = self._open(name)
            if shard.attrs.get("fingerprint") != self.fingerprint:
                raise UcfpipeError(f"{path} has a different fingerprint than the manifest; re-extract")
            try:
                ids = _strings(shard["video_id"])
                rows = {key: shard[key][()].tolist() for key in meta if key != "video_id"}
            except (OSError, RuntimeError, KeyError, ValueError) as err:
                raise self.damaged(name, err) from None
            for row, video_id in enumerate(ids):
                if video_id in self._where:
                    raise UcfpipeError(f"{video_id} is stored twice in {self.directory}; the cache is corrupt, re-extract")
                self._where[video_id] = (name, row)
            for key in meta:
                meta[key].extend(ids if key == "video_id" else rows[key])
        order = np.argsort(meta["video_id"], kind="stable")
        self.video_ids: list[str] = [meta["video_id"][i] for i in order]
        self._meta = {k: np.asarray(v)[order] for k, v in meta.items() if k != "video_id"}
        self._row = {video_id: i for i, video_id in enumerate(self.video_ids)}

    def damaged(self, name: str, detail) -> UcfpipeError:
        detail = str(detail).splitlines()[0] if str(detail) else type(detail).__name__
        return UcfpipeError(
            f"{self.directory / name} is damaged ({detail}); `ucfpipe check --features {self.directory}` lists every "
            "damaged shard, and rerunning the extract command that made the cache extracts their clips again"
        )

    # -- what produced it ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def checksums(self) -> dict:
        """{shard: {"sha256", "bytes", "clips"}}; empty for a format-1 cache (made before checksums)."""
        return self.manifest.get("checksums", {})

    @property
    def settings(self) -> dict:
        """The fingerprinted settings (weights identity, layer, pooling, size, frames, dtype, versions...)."""
        return self.manifest["settings"]

    @property
    def config(self) -> dict:
        """The full extract configuration of the run that made the cache."""
        return self.manifest["config"]

    @property
    def views(self) -> list[str]:
        return self.manifest["views"]

    @property
    def num_steps(self) -> int:
        return self.settings["frames"]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["feature_shape"])

    @property
    def report(self) -> dict:
        """Clips listed but not extracted: {"missing": [...], "failed": {video_id: reason}}."""
        return self.manifest.get("report", {"missing": [], "failed": {}})

    # -- clips -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.video_ids)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._where

    def _open(self, name: str) -> h5py.File:
        if name not in self._files:
            try:
                self._files[name] = h5py.File(self.directory / name, "r")
            except OSError as err:
                raise self.damaged(name, err) from None
        return self._files[name]

    def _rows(self, video_ids) -> np.ndarray:
        missing = [v for v in video_ids if v not in self._row]
        if missing:
            raise UcfpipeError(f"{len(missing)} clips are not in the cache {self.directory}, e.g. {missing[0]}")
        return np.array([self._row[v] for v in video_ids], dtype=np.int64)

    def labels(self, video_ids) -> np.ndarray:
        return self._meta["label"][self._rows(video_ids)]

    def groups(self, video_ids) -> np.ndarray:
        return self._meta["group"][self._rows(video_ids)]

    def _read(self, dataset: str, video_ids, view) -> np.ndarray:
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for position, video_id in enumerate(video_ids):
            if video_id not in self._where:
                self._rows([video_id])  # raises the user-facing error
            name, row = self._where[video_id]
            by_shard.setdefault(name, []).append((row, position))
        out = None
        for name, pairs in by_shard.items():
            pairs.sort()
            rows = [row for row, _ in pairs]
            data = self._open(name)[dataset]
            try:  # reading checks the fletcher32 checksum of every chunk read
                block = data[rows] if len(set(rows)) == len(rows) else np.stack([data[r] for r in rows])
            except (OSError, RuntimeError) as err:
                raise self.damaged(name, err) from None
            if view is not None:
                block = block[:, view]
            if out is None:
                out = np.empty((len(video_ids),) + block.shape[1:], block.dtype)
            out[[position for _, position in pairs]] = block
        if out is None:
            view_shape = () if view is not None else (len(self.views),)
            shape = {"features": view_shape + (self.num_steps,) + self.feature_shape, "frame_indices": view_shape + (self.num_steps,)}
            out = np.empty((0,) + shape[dataset], np.dtype(self.settings["dtype"]) if dataset == "features" else np.int32)
        return out

    def features(self, video_ids, view: int | None = 0) -> np.ndarray:
        """(N, T, *feature_shape) for one view (default the first, the plain centre view); all views
        as (N, V, T, ...) with `view=None`. Stored dtype (float16 by default)."""
        return self._read("features", list(video_ids), view)

    def frame_indices(self, video_ids, view: int | None = 0) -> np.ndarray:
        return self._read("frame_indices", list(video_ids), view)

    def typical_clip_seconds(self) -> float | None:
        """The median clip duration (decoded frames / fps) over the clips with a known fps: the span a model
        trained on this cache has learnt to see in T steps. None when no clip knows its fps."""
        fps = self._meta["fps"].astype(np.float64)
        known = fps > 0
        if not known.any():
            return None
        return float(np.median(self._meta["num_frames"][known] / fps[known]))

    def clip(self, video_id: str) -> ClipFeatures:
        row = self._rows([video_id])[0]
        return ClipFeatures(
            video_id=video_id,
            label=int(self._meta["label"][row]),
            group=int(self._meta["group"][row]),
            num_frames=int(self._meta["num_frames"][row]),
            fps=float(self._meta["fps"][row]),
            frame_indices=self.frame_indices([video_id], view=None)[0],
            features=self.features([video_id], view=None)[0],
        )

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
