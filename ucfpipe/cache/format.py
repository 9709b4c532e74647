"""The feature cache's format, its one owner: shard names, what a shard holds and how it is read and checked,
the manifest's name, what a clip's features were computed from. The format is documented in docs/cache-format.md.
Writing is `cache.writer`'s, reading a finished cache `cache.store`'s."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT = "ucfpipe-features/2"
UNCHECKSUMMED_FORMATS = ("ucfpipe-features/1",)  # still read: same datasets, no checksums (docs/cache-format.md)
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



def describe_difference(first: dict, second: dict, first_is: str = "in cache vs", second_is: str = "now") -> str:
    """The one "settings differ" text (extract, eval, predict): each setting whose value differs, as
    "KEY: FIRST first_is SECOND second_is", e.g. "frames: 8 in cache vs 16 now", joined by "; "."""
    keys = sorted(set(first) | set(second))
    diffs = [f"{k}: {_plain(first, k)} {first_is} {_plain(second, k)} {second_is}" for k in keys if first.get(k) != second.get(k)]
    return "; ".join(diffs) or "identical settings, different fingerprint"


def _plain(settings: dict, key: str) -> str:
    """A setting's value as a user would type it: 8, vgg16, center,flip; "the default" where it is not recorded
    (settings such as backbone and dataset are only recorded when they are not the default)."""
    if key not in settings or settings[key] is None:
        return "the default"
    value = settings[key]
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# -- one shard --------------------------------------------------------------------------------------------
_PER_CLIP = ("label", "group", "num_frames", "fps")
_PER_CLIP_DTYPES = {"label": np.int32, "group": np.int32, "num_frames": np.int32, "fps": np.float32}


def _fixedread_strings(values: list[str]) -> tuple[list[bytes], object]:
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
            put(name, *_fixedread_strings(values))
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


def read_strings(dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in dataset[()]]


def read_shard(path: Path) -> list[ClipFeatures]:
    """Every clip of a shard (reading checks every fletcher32 checksum)."""
    with h5py.File(path, "r") as shard:
        ids = read_strings(shard["video_id"])
        meta = {key: shard[key][()] for key in _PER_CLIP + ("frame_indices", "features")}
        sources = [None] * len(ids)
        if "source_path" in shard:
            paths, digests = read_strings(shard["source_path"]), read_strings(shard["source_digest"])
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



def read_manifest(directory: Path) -> dict | None:
    """The manifest, or None when there is none or it is not valid JSON (the run rewrites it at the end)."""
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def clip_sources(path: Path) -> list[tuple[str, Source | None]]:
    """[(video_id, the Source its features were computed from)] of one shard (None in format-1 shards)."""
    with h5py.File(path, "r") as shard:
        ids = read_strings(shard["video_id"])
        if "source_path" not in shard:
            return [(video_id, None) for video_id in ids]
        paths, digests = read_strings(shard["source_path"]), read_strings(shard["source_digest"])
        sizes, mtimes = shard["source_size"][()], shard["source_mtime_ns"][()]
    return [(video_id, Source(p, int(s), int(m), d) if p else None)
            for video_id, p, s, m, d in zip(ids, paths, sizes, mtimes, digests)]


def feature_shape(directory: Path, shards: list[str]) -> list[int]:
    """The per-frame feature shape F, as stored (features are (N, V, T, *F))."""
    if not shards:
        return []
    with h5py.File(Path(directory) / shards[0], "r") as shard:
        return list(shard["features"].shape[3:])

