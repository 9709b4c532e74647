"""What both stage-one engines share (`local_engine` in this process, `ray_engine` on a Ray cluster): decoding a
clip one way, the pool of decoding threads, the batcher that packs frames of many clips into the model's
batches, the check that the storage dtype holds the features, and the line an interrupted run ends with.
So a clip fails, batches and is refused for the same reason whichever engine runs."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.format import Source
from ucfpipe.config import ExtractConfig
from ucfpipe.core import interrupts
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.core.queues import put_unless_stopped
from ucfpipe.video.decode import VideoError, read_views


@dataclass
class Pending:
    """A decoded clip whose frames are on their way through the model."""

    clip: datasets.Clip
    frames: np.ndarray
    frame_indices: np.ndarray
    num_frames: int
    fps: float
    source: Source | None = None
    outputs: np.ndarray | None = None
    remaining: int = 0


@dataclass
class Batcher:
    """Packs frames of consecutive clips into batches and hands back clips once all their frames went through
    the model.

    A batch is never larger than the work there is (`total_frames`), and a last partial batch is padded only
    up to the next power of two: a batch size far above the frames to do would otherwise cost its full time
    and memory for padding. Full batches share one shape and the last one adds at most one more, so JAX and
    TensorFlow compile few graphs."""

    model: object
    batch_size: int
    frame_shape: tuple
    total_frames: int | None = None  # frames this run will send, when known: caps the batch
    frames_done: int = 0
    _slots: list = field(default_factory=list)
    _fill: int = 0

    def __post_init__(self):
        self.capacity = max(1, min(self.batch_size, self.total_frames or self.batch_size))
        try:
            self._buffer = np.zeros((self.capacity,) + self.frame_shape, np.uint8)
        except MemoryError:
            raise self._out_of_memory() from None

    def add(self, pending: Pending) -> list[Pending]:
        interrupts.check()  # a safe point between clips: a swallowed Ctrl-C stops here
        finished = []
        pending.remaining = len(pending.frames)
        start = 0
        while start < len(pending.frames):
            count = min(self.capacity - self._fill, len(pending.frames) - start)
            self._buffer[self._fill : self._fill + count] = pending.frames[start : start + count]
            self._slots.append((pending, start, count, self._fill))
            self._fill += count
            start += count
            if self._fill == self.capacity:
                finished += self.run()
        pending.frames = None  # the batch buffer holds what is still needed; free the clip's frames
        return finished

    def padded_size(self) -> int:
        """Rows the model gets for what is buffered: all of a full batch, else the next power of two (stale
        rows pad it; their outputs are ignored)."""
        return min(self.capacity, 1 << (self._fill - 1).bit_length())

    def run(self) -> list[Pending]:
        """Run the model on what is buffered."""
        if not self._fill:
            return []
        try:
            outputs = np.asarray(self.model.predict_on_batch(self._buffer[: self.padded_size()]))
        except Exception as err:
            if is_out_of_memory(err):
                raise self._out_of_memory() from None
            raise
        finished = []
        for pending, start, count, offset in self._slots:
            if pending.outputs is None:
                pending.outputs = np.empty((pending.remaining,) + outputs.shape[1:], np.float32)
            pending.outputs[start : start + count] = outputs[offset : offset + count]
            pending.remaining -= count
            if pending.remaining == 0:
                finished.append(pending)
        self.frames_done += self._fill
        self._slots, self._fill = [], 0
        return finished

    def _out_of_memory(self) -> UcfpipeError:
        smaller = max(1, self.capacity // 4)
        return UcfpipeError(
            f"out of memory running the backbone on batches of {self.capacity} frames of {'x'.join(map(str, self.frame_shape))}; "
            f"pass a smaller --batch-size (e.g. {smaller})"
        )


def is_out_of_memory(err: BaseException) -> bool:
    """TensorFlow raises ResourceExhaustedError, JAX an XlaRuntimeError saying RESOURCE_EXHAUSTED, NumPy MemoryError."""
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, MemoryError) or "ResourceExhausted" in text or "RESOURCE_EXHAUSTED" in text or "Out of memory" in text


def decode_clip(videos: Path, relative_path: str, frames: int, size: int, view_names) -> tuple:
    """(sampled views, None, source) of one clip, or (None, why it could not be read, None): both engines
    decode a clip this one way, so a clip fails for the same reason whichever engine runs."""
    try:
        # Recorded before decoding: a file replaced meanwhile then looks changed to the next run.
        source = Source.of(videos, relative_path)
        return read_views(videos / relative_path, frames, size, view_names), None, source
    except VideoError as err:
        return None, str(err).replace(f"{videos / relative_path}: ", ""), None
    except Exception as err:  # a decoder crash on one clip must not end the run
        return None, f"unexpected {type(err).__name__}: {err}", None


def decode_clips(clips, config: ExtractConfig, results: queue.Queue, stop: threading.Event) -> list[threading.Thread]:
    """Start `config.workers` threads decoding `clips` into `results`; each ends with a None sentinel."""
    todo: queue.Queue = queue.Queue()
    for clip in clips:
        todo.put(clip)
    videos = Path(config.videos)
    view_names = config.view_names()

    def work():
        while not stop.is_set():
            try:
                clip = todo.get_nowait()
            except queue.Empty:
                break
            item = (clip, *decode_clip(videos, clip.relative_path, config.frames, config.size, view_names))
            if not put_unless_stopped(results, item, stop, 0.2):
                return
        put_unless_stopped(results, None, stop, 0.2)

    threads = [threading.Thread(target=work, name=f"decode-{i}", daemon=True) for i in range(config.workers)]
    for thread in threads:
        thread.start()
    return threads


# Refused when more than this share of a batch's nonzero features falls below the storage dtype's smallest
# normal number. Random-weight MobileNetV3 and EfficientNet put all of theirs there (about 1e-12 and 1e-7);
# VGG16, ResNet50 and ConvNeXt well under 1 %.
UNDERFLOW_SHARE = 0.5


def check_storable(outputs: list[np.ndarray], config: ExtractConfig) -> None:
    """Refuse features the storage dtype cannot hold: below float16's smallest normal number (6.1e-05) a
    value keeps few digits or becomes 0, and a cache of zeros would train and evaluate without a word.
    Refusing, rather than storing float32 behind the user's back, keeps --dtype what the cache says it is."""
    smallest = np.finfo(np.dtype(config.dtype)).tiny
    if smallest <= np.finfo(np.float32).tiny:
        return  # float32 holds whatever the model computed
    values = np.abs(np.concatenate([o.ravel() for o in outputs]).astype(np.float32))
    nonzero = values[values > 0]
    below = int(np.count_nonzero(nonzero < smallest))
    if nonzero.size and below > UNDERFLOW_SHARE * nonzero.size:
        zeros = int(np.count_nonzero(values.astype(config.dtype) == 0))
        raise UcfpipeError(
            f"{config.backbone} (--weights {config.weights}) gives features {config.dtype} cannot hold: "
            f"{below / nonzero.size:.0%} of a batch's nonzero numbers are below its smallest normal number "
            f"{smallest:.1e} (median {np.median(nonzero):.1e}), {zeros / values.size:.0%} would be stored as 0; "
            "extract with --dtype float32"
        )


def kept(writer) -> str:
    """What an interrupted or failed run leaves: the clips whose features are complete, and how to go on."""
    if not writer.done_ids:  # stopped before the first shard: nothing to resume, and no cache to point at
        return "no clip was finished yet; rerun the same command to start again"
    return f"{len(writer.done_ids)} clips are safely in {writer.directory}; rerun the same command to resume"


def interrupted(writer) -> Interrupted:
    """Ctrl-C or SIGTERM during featurising, after `writer` kept the clips whose features are complete."""
    return Interrupted(f"interrupted: {kept(writer)}")
