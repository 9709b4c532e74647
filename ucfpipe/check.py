"""`ucfpipe check`: scan the listed clips before a long run and say what is wrong with each bad one.

Decodes every frame (that is the only way to know the true count) but runs no CNN and converts no frame,
so it runs at decoding speed. Problems are of two kinds:
- errors: extraction cannot use the clip (missing, empty, not a video, unreadable, no decodable frames);
- warnings: extraction handles the clip by a documented rule (fewer frames than T: frames repeat; a
  container that misreports its frame count: the decoded count is used).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import datasets
from .video import VideoError, count_frames

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
    with path.open("rb") as handle:
        head = handle.read(16)
    if not _looks_like_video(head):
        return [Problem(video_id, "not a video", f"{size} bytes that start like no video container ({head[:8]!r})")]
    try:
        decoded, claimed = count_frames(path)
    except VideoError as err:
        return [Problem(video_id, "unreadable", str(err).split(": ", 1)[-1])]
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
    from tqdm import tqdm

    videos = Path(videos)
    if not videos.is_dir():
        datasets.missing_on_disk([], videos)  # raises the one-line error about --videos
    clips = datasets.all_clips(dataset, splits)
    lock = threading.Lock()
    with tqdm(total=len(clips), unit="clip", disable=not progress) as bar:

        def one(clip):
            found = check_clip(videos / clip.relative_path, clip.video_id, frames)
            with lock:
                bar.update(1)
            return found

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, clips))
    return len(clips), [problem for found in results for problem in found]
