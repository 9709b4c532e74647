"""Reading a finished feature cache: `FeatureStore(directory)`, verified as it reads."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from ucfpipe.cache.format import (
    FORMAT,
    MANIFEST,
    SHARD_GLOB,
    UNCHECKSUMMED_FORMATS,
    ClipFeatures,
    Source,
    clip_sources,
    read_strings,
)
from ucfpipe.core.errors import UcfpipeError


class FeatureStore:
    """Read-only access to a finished feature cache: `FeatureStore(dir)`.

    >>> store = FeatureStore("features/ucf101")
    >>> x = store.features(store.video_ids[:8])        # (8, T, 512) for the first view

    Damage is refused with one line naming the shard: shard sizes are checked against the manifest on
    opening and HDF5 checks every fletcher32 checksum on every read. The full SHA-256 of every shard is
    left to `ucfpipe check --features` and to extract's resume scan (hashing the whole cache at each
    opening would cost seconds per GB, every time a run starts)."""

    def __init__(self, directory: str | Path, passed: str = "with --features"):
        """`passed`: how the command was given the directory, for the message when no cache is there."""
        self.directory = Path(directory)
        manifest_path = self.directory / MANIFEST
        if not manifest_path.is_file():
            if any(self.directory.glob(SHARD_GLOB)):
                raise UcfpipeError(
                    f"feature cache {self.directory} is incomplete (extraction was interrupted or is running); "
                    "rerun the same `ucfpipe extract` command to finish it"
                )
            raise UcfpipeError(
                f"no feature cache at {self.directory}: if the cache moved, pass its new directory {passed}; "
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
                ids = read_strings(shard["video_id"])
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

    def recorded_path(self, name: str) -> Path | None:
        """A path the extract config recorded ("videos", "splits"), absolute; None when it recorded none. Caches
        made before records held absolute paths hold them as typed, relative to the folder extract ran in: the
        folder from which the recorded `out` leads to this cache (else the current one, the best guess left)."""
        value = self.config.get(name) or ""
        if not value or Path(value).is_absolute():
            return Path(value) if value else None
        out, here = Path(self.config.get("out") or ""), self.directory.resolve()
        depth = len(out.parts)
        if depth and not out.is_absolute() and ".." not in out.parts and here.parts[-depth:] == out.parts:
            return Path(*here.parts[:-depth]) / value
        return Path(value).resolve()

    def sources(self) -> dict[str, Source | None]:
        """{video_id: the video file its features were computed from} (None in a format-1 cache)."""
        return {video_id: source for name in self.manifest["shards"] for video_id, source in clip_sources(self.directory / name)}

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
