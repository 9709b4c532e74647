"""The feature cache: HDF5 shards plus a manifest written last. The format is documented in features/README.md.

Safety rules that make interruption harmless:
- a shard is written to `*.h5.tmp` and renamed, so a file named `shard-*.h5` is always whole;
- shards are immutable and a clip goes into exactly one shard; a resumed run skips clips already in a shard;
- every shard carries the fingerprint of the settings that made it, so different settings never mix;
- the manifest is written last (also atomically), and a cache without one is reported as incomplete;
- one writer at a time, enforced by an OS lock that dies with its process (so `kill -9` leaves no stale lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .errors import UcfpipeError

FORMAT = "ucfpipe-features/1"
MANIFEST = "manifest.json"
LOCK = "extract.lock"
SHARD_GLOB = "shard-*.h5"
_STRINGS = h5py.string_dtype("utf-8")


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


def write_json_atomic(path: Path, data) -> None:
    """Temp file, fsync, rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def describe_difference(expected: dict, found: dict) -> str:
    keys = sorted(set(expected) | set(found))
    diffs = [f"{k}: {found.get(k)!r} in cache vs {expected.get(k)!r} now" for k in keys if expected.get(k) != found.get(k)]
    return "; ".join(diffs) or "identical settings, different fingerprint"


class ShardWriter:
    """Buffers finished clips and writes them as immutable shards. Use through `open_for_writing`."""

    def __init__(self, directory: Path, fingerprint: str, settings: dict, shard_clips: int, shard_seconds: float):
        self.directory = directory
        self.fingerprint = fingerprint
        self.settings = settings
        self.shard_clips = shard_clips
        self.shard_seconds = shard_seconds
        self._buffer: list[ClipFeatures] = []
        self._last_flush = time.monotonic()
        self.done_ids: set[str] = set()
        self.shards: list[str] = []
        for path in sorted(directory.glob(SHARD_GLOB)):
            with h5py.File(path, "r") as shard:
                found = shard.attrs.get("fingerprint")
                if found != fingerprint:
                    old = json.loads(shard.attrs.get("settings", "{}"))
                    raise UcfpipeError(
                        f"{directory} holds features made with other settings ({describe_difference(settings, old)}); "
                        "use another --out directory, or delete this one to re-extract"
                    )
                ids = [v.decode() if isinstance(v, bytes) else v for v in shard["video_id"][()]]
            duplicated = self.done_ids.intersection(ids)
            if duplicated:
                raise UcfpipeError(f"{path} repeats clips of other shards (e.g. {sorted(duplicated)[0]}); the cache is corrupt, delete it")
            self.done_ids.update(ids)
            self.shards.append(path.name)

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
        number = max([int(name[6:11]) for name in self.shards], default=-1) + 1
        path = self.directory / f"shard-{number:05d}.h5"
        tmp = path.with_name(path.name + ".tmp")
        clips = self._buffer
        with h5py.File(tmp, "w") as shard:
            shard.attrs["format"] = FORMAT
            shard.attrs["fingerprint"] = self.fingerprint
            shard.attrs["settings"] = json.dumps(self.settings, sort_keys=True)
            shard.create_dataset("video_id", data=[c.video_id for c in clips], dtype=_STRINGS)
            shard.create_dataset("label", data=np.array([c.label for c in clips], np.int32))
            shard.create_dataset("group", data=np.array([c.group for c in clips], np.int32))
            shard.create_dataset("num_frames", data=np.array([c.num_frames for c in clips], np.int32))
            shard.create_dataset("fps", data=np.array([c.fps for c in clips], np.float32))
            shard.create_dataset("frame_indices", data=np.stack([c.frame_indices for c in clips]).astype(np.int32))
            features = np.stack([c.features for c in clips]).astype(self.settings["dtype"])
            # One clip per chunk: readers fetch whole clips, in any order.
            shard.create_dataset("features", data=features, chunks=(1,) + features.shape[1:])
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self.shards.append(path.name)
        self._buffer = []


@contextmanager
def open_for_writing(directory: str | Path, fingerprint: str, settings: dict, shard_clips: int = 128, shard_seconds: float = 120.0):
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
        manifest_path = directory / MANIFEST
        if manifest_path.exists():
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("fingerprint") != fingerprint:
                raise UcfpipeError(
                    f"{directory} holds features made with other settings "
                    f"({describe_difference(settings, manifest.get('settings', {}))}); "
                    "use another --out directory, or delete this one to re-extract"
                )
        for stale in directory.glob("*.tmp"):  # left by a killed writer; never read as whole
            stale.unlink()
        yield ShardWriter(directory, fingerprint, settings, shard_clips, shard_seconds)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


class FeatureStore:
    """Read-only access to a finished feature cache: `FeatureStore(dir)`.

    >>> store = FeatureStore("features/ucf101")
    >>> x = store.features(store.video_ids[:8])        # (8, T, 512) for the first view
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            if any(self.directory.glob(SHARD_GLOB)):
                raise UcfpipeError(
                    f"feature cache {self.directory} is incomplete (extraction was interrupted or is running); "
                    "rerun the same `ucfpipe extract` command to finish it"
                )
            raise UcfpipeError(f"no feature cache at {self.directory}: run `ucfpipe extract --out {self.directory}` first")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UcfpipeError(f"{manifest_path} is not valid JSON; rerun `ucfpipe extract` to rewrite it") from None
        if self.manifest.get("format") != FORMAT:
            raise UcfpipeError(f"{self.directory} is not a {FORMAT} cache (format {self.manifest.get('format')!r})")
        self._files: dict[str, h5py.File] = {}
        self._where: dict[str, tuple[str, int]] = {}
        meta: dict[str, list] = {k: [] for k in ("video_id", "label", "group", "num_frames", "fps")}
        for name in self.manifest["shards"]:
            shard = self._open(name)
            if shard.attrs.get("fingerprint") != self.fingerprint:
                raise UcfpipeError(f"{self.directory / name} has a different fingerprint than the manifest; re-extract")
            ids = [v.decode() if isinstance(v, bytes) else v for v in shard["video_id"][()]]
            for row, video_id in enumerate(ids):
                if video_id in self._where:
                    raise UcfpipeError(f"{video_id} is stored twice in {self.directory}; the cache is corrupt, re-extract")
                self._where[video_id] = (name, row)
            for key in meta:
                meta[key].extend(ids if key == "video_id" else shard[key][()].tolist())
        order = np.argsort(meta["video_id"], kind="stable")
        self.video_ids: list[str] = [meta["video_id"][i] for i in order]
        self._meta = {k: np.asarray(v)[order] for k, v in meta.items() if k != "video_id"}
        self._row = {video_id: i for i, video_id in enumerate(self.video_ids)}

    # -- what produced it ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

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
                raise UcfpipeError(f"cannot read {self.directory / name} ({err}); re-extract the cache") from None
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
            block = data[rows] if len(set(rows)) == len(rows) else np.stack([data[r] for r in rows])
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
