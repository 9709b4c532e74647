"""`ucfpipe check`: scan the listed clips before a long run and say what is wrong with each bad one;
with `--features`, verify a feature cache instead (`check_features`).

The decoder judges what is a video: a raw MPEG-4 stream named .avi starts like no container, yet it
decodes. File signatures only name what OpenCV could not open: a known container's header means a
damaged video ("unreadable"), anything else "not a video". Decodes every frame (that is the only way to know the true count) but runs no CNN and converts no frame,
so it runs at decoding speed. Problems are of two kinds:
- errors: extraction cannot use the clip (missing, empty, not a video, unreadable, no decodable frames);
- warnings: extraction handles the clip by a documented rule (fewer frames than T: frames repeat; a
  container that misreports its frame count: the decoded count is used).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ucfpipe import datasets
from ucfpipe.cache.format import FORMAT, MANIFEST, SHARD_GLOB, clip_sources, verify_shard
from ucfpipe.cache.store import FeatureStore
from ucfpipe.core.errors import EXIT_INCOMPLETE, UcfpipeError
from ucfpipe.video.decode import VideoError, count_frames

ERRORS = ("missing", "empty", "not a video", "unreadable", "no decodable frames")
WARNINGS = ("fewer frames than asked", "frame count misreported")


@dataclass
class Problem:
    video_id: str
    kind: str  # one of ERRORS or WARNINGS
    detail: str

    @property
    def is_error(self) -> bool:
        return self.kind in ERRORS


def _looks_like_video(head: bytes) -> bool:
    """Container signatures: AVI (RIFF....AVI ), MP4/MOV (....ftyp), Matroska/WebM, MPEG-PS/TS, FLV, ASF."""
    return (
        (head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"))
        or head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")
        or head[:4] in (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV\x01")
        or head[:1] == b"\x47"
        or head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
    )


def check_clip(path: Path, video_id: str, frames: int) -> list[Problem]:
    if not path.is_file():
        return [Problem(video_id, "missing", f"no file at {path}")]
    size = path.stat().st_size
    if size == 0:
        return [Problem(video_id, "empty", "0 bytes")]
    try:
        decoded, claimed = count_frames(path)
    except VideoError as err:
        detail = str(err).split(": ", 1)[-1]
        if "cannot open" not in detail:
            return [Problem(video_id, "unreadable", detail)]
        with path.open("rb") as handle:
            head = handle.read(16)
        if _looks_like_video(head):
            return [Problem(video_id, "unreadable", f"{size} bytes with a video container's header that OpenCV cannot open")]
        return [Problem(video_id, "not a video", f"OpenCV cannot open these {size} bytes, which start like no video container ({head[:8]!r})")]
    if decoded == 0:
        return [Problem(video_id, "no decodable frames", f"the container claims {claimed}")]
    problems = []
    if decoded < frames:
        problems.append(Problem(video_id, "fewer frames than asked", f"{decoded} frames < T = {frames}: frames repeat"))
    if claimed != decoded:
        problems.append(Problem(video_id, "frame count misreported", f"container says {claimed}, {decoded} decode"))
    return problems


def run(videos: str | Path, splits: str | Path, frames: int = 40, workers: int = 2, progress: bool = True,
        dataset: str = "ucf101") -> tuple[int, list[Problem]]:
    """(clips checked, problems found), in video id order."""
    from ucfpipe.core.progress import progress_bar

    videos = Path(videos)
    if not videos.is_dir():
        datasets.missing_on_disk([], videos)  # raises the one-line error about --videos
    clips = datasets.all_clips(dataset, splits)
    lock = threading.Lock()
    with progress_bar(len(clips), "clip", progress) as bar:

        def one(clip):
            found = check_clip(videos / clip.relative_path, clip.video_id, frames)
            with lock:
                bar.update(1)
            return found

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, clips))
    return len(clips), [problem for found in results for problem in found]


@dataclass
class CacheReport:
    """What `check --features` found: shard problems, clips whose video changed, and what was hashed."""

    directory: Path
    format: str
    shards: int
    clips: int
    damaged: dict[str, str] = field(default_factory=dict)  # shard -> what is wrong ("missing" included)
    changed: dict[str, str] = field(default_factory=dict)  # video_id -> how its video changed
    deleted: dict[str, str] = field(default_factory=dict)  # video_id -> the path its video had
    hashed_bytes: int = 0
    seconds: float = 0.0

    @property
    def whole(self) -> bool:
        return not self.damaged and not self.changed and not self.deleted

    @property
    def checksummed(self) -> bool:
        return self.format == FORMAT


class Unfinished(UcfpipeError):
    """`check --features` on a cache whose extraction has not finished: what the check found, not bad input."""

    exit_code = EXIT_INCOMPLETE


def check_features(directory: str | Path, videos: str | Path | None = None) -> CacheReport:
    """Verify every shard the manifest lists: its size and SHA-256 against the manifest (a format-1 cache,
    made before checksums, can only be read through). With `videos`, also compare each clip's recorded size,
    mtime and content fingerprint with the file there now, and list clips whose video is no longer there."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        shards = len(list(directory.glob(SHARD_GLOB)))
        if shards:
            raise Unfinished(f"{directory} is an unfinished cache: {shards} shards and no manifest yet (extraction was "
                             "interrupted, or is still running); rerun the same `ucfpipe extract` command to complete it")
        FeatureStore(directory)  # raises the one-line error: no cache there
    try:  # the manifest only: FeatureStore would stop at the first damaged shard, the check lists them all
        manifest = json.loads((directory / MANIFEST).read_text())
    except (ValueError, UnicodeDecodeError):
        raise UcfpipeError(f"{directory / MANIFEST} is not valid JSON; rerun the extract command to rewrite it") from None
    started = time.monotonic()
    names = list(manifest.get("shards", []))
    checksums = manifest.get("checksums", {})
    report = CacheReport(directory, manifest.get("format", "?"), len(names), manifest.get("num_clips", 0))
    for name in names:
        path = directory / name
        problem = verify_shard(path, checksums.get(name))
        if problem:
            report.damaged[name] = problem
            continue
        report.hashed_bytes += path.stat().st_size
        if videos is not None:
            for video_id, source in clip_sources(path):
                if source is None:
                    continue
                if not (Path(videos) / source.path).exists():
                    report.deleted[video_id] = str(Path(videos) / source.path)
                elif how := source.change(Path(videos)):
                    report.changed[video_id] = how
    report.seconds = time.monotonic() - started
    return report
