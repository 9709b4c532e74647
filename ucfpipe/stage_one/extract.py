"""Stage one: every clip named by the split lists -> backbone features per sampled frame, in the feature cache.

Decoding threads feed the model through a bounded queue (memory stays flat for any number of clips);
frames of many clips share one batch (full batches share one shape, so JAX compiles few graphs);
finished clips go to the shard writer. The cache is resumable: a rerun extracts only what is missing.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.format import FORMAT, LOCK, MANIFEST, ClipFeatures, Source
from ucfpipe.cache.writer import open_for_writing, write_manifest
from ucfpipe.config import ExtractConfig, fingerprint, recorded
from ucfpipe.core import interrupts
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.core.queues import put_unless_stopped
from ucfpipe.video.decode import RESIZE_METHOD, SAMPLING_METHOD, VideoError, read_views


def feature_settings(config: ExtractConfig) -> dict:
    """Everything that determines the stored numbers, and nothing else (paths, batch size and worker
    count do not change a feature, so they do not change the fingerprint)."""
    import keras

    from ucfpipe.models import backbones
    from ucfpipe.models.extractor import weights_identity

    backbone = backbones.get(config.backbone)
    # VGG16's settings stay exactly as they were before backbones were selectable, so its existing caches
    # (and the runs trained on them) keep their fingerprint; any other backbone is named.
    named = {} if backbone.name == backbones.DEFAULT else {"backbone": backbone.name}
    return {
        "format": FORMAT,
        "model": f"keras.applications.{backbone.constructor}(include_top=False)",
        **named,
        **weights_identity(config.weights, config.seed, backbone.name),
        "layer": config.layer or backbone.default_layer,
        "pooling": config.pooling,
        "size": config.size,
        "frames": config.frames,
        "sampling": SAMPLING_METHOD,
        "resize": RESIZE_METHOD,
        "views": list(config.view_names()),
        "dtype": config.dtype,
        "precision": config.precision,
        "keras": keras.__version__,
        # The stored labels follow the dataset's classes, so one cache never mixes two datasets. UCF-101 adds
        # nothing, so its caches made before datasets existed keep their fingerprint.
        **({} if config.dataset == "ucf101" else {"dataset": config.dataset}),
    }


@dataclass
class _Pending:
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
class _Batcher:
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

    def add(self, pending: _Pending) -> list[_Pending]:
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

    def run(self) -> list[_Pending]:
        """Run the model on what is buffered."""
        if not self._fill:
            return []
        try:
            outputs = np.asarray(self.model.predict_on_batch(self._buffer[: self.padded_size()]))
        except Exception as err:
            if _is_out_of_memory(err):
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


def _is_out_of_memory(err: BaseException) -> bool:
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


def _decode_clips(clips, config: ExtractConfig, results: queue.Queue, stop: threading.Event) -> list[threading.Thread]:
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


def plan(config: ExtractConfig) -> tuple[list[datasets.Clip], list[datasets.Clip], dict]:
    """(clips to extract, listed clips missing on disk, which part of the clip list this run covers).

    With `shard = "i/N"` a run covers every N-th clip of the sorted list starting at i: computed from the
    lists alone, never from what is on disk, so the N parts are disjoint and complete whatever each machine
    sees. The list's digest lets `merge` refuse parts made from different split files. Missing clips are
    an error unless allowed."""
    listed = datasets.all_clips(config.dataset, config.splits)
    index, count = config.shard_part()
    part = {"index": index, "count": count, "clip_list": fingerprint({"video_ids": [c.video_id for c in listed]})}
    clips = list(listed)[index::count]
    missing = datasets.missing_on_disk(clips, config.videos)
    if missing and not config.allow_missing:
        examples = ", ".join(c.relative_path for c in missing[:3])
        raise UcfpipeError(
            f"{len(missing)} of {len(clips)} listed clips are missing under {config.videos} (e.g. {examples}, "
            f"listed at {missing[0].listed_at}); fix --videos or the list, or pass --allow-missing to extract the clips that are there"
        )
    absent = {c.video_id for c in missing}
    return [c for c in clips if c.video_id not in absent], missing, part


def run(config: ExtractConfig, progress: bool = True, log=print, model=None) -> dict:
    """Extract what the cache at `config.out` lacks; write the manifest. Returns the run's summary.
    `model` is a prebuilt extractor for these settings (the benchmark passes a warmed-up one)."""
    config.validate()
    extract_clips = engine(config, log)  # --engine ray without Ray installed is refused before any planning
    if config.weights not in ("imagenet", "none") and Path(config.weights).is_file():  # a missing one: feature_settings
        from ucfpipe.models.extractor import check_weights_file

        check_weights_file(config.backbone, config.weights)  # another model's or width's file: nothing written
    clips, missing, part = plan(config)
    settings = feature_settings(config)
    cache_fingerprint = fingerprint(settings)
    out = Path(config.out)
    started = time.time()
    with _removed_unless_written(out), \
            open_for_writing(out, cache_fingerprint, settings, config.shard_clips, config.shard_seconds, log) as writer:
        changed = writer.drop_changed(Path(config.videos))
        for video_id, how in list(changed.items())[:10]:
            log(f"  changed since extraction: {video_id}: {how}")
        todo = [c for c in clips if c.video_id not in writer.done_ids]
        if not todo and (out / MANIFEST).exists():
            log(f"{out}: all {len(writer.done_ids)} clips already extracted with these settings; nothing to do")
            return {"extracted": 0, "failed": {}, "cached": len(writer.done_ids), "missing": len(missing), "out": str(out),
                    "changed": {}, "damaged": 0}
        again = "".join([f", {writer.damaged_clips} of damaged shards" if writer.damaged_clips else "",
                         f", {len(changed)} whose video changed" if changed else ""])
        log(f"extracting {len(todo)} clips ({len(writer.done_ids)} already in {out}, {len(missing)} missing on disk{again})")
        failed, frames_per_second = extract_clips(todo, config, writer, model, progress) if todo else ({}, 0.0)
        elapsed = time.time() - started
        _write_manifest(out, config, settings, cache_fingerprint, writer, clips, missing, failed, part,
                        last_run={"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(elapsed, 1),
                                  "clips_extracted": len(todo) - len(failed), "frames_per_second": round(frames_per_second, 1)})
    summary = {"extracted": len(todo) - len(failed), "failed": failed, "cached": len(writer.done_ids),
               "missing": len(missing), "out": str(out), "seconds": elapsed, "frames_per_second": frames_per_second,
               "changed": changed, "damaged": writer.damaged_clips}
    log(f"done: {summary['extracted']} clips extracted in {elapsed:.1f} s ({frames_per_second:.1f} frames/s through {config.backbone}), "
        f"{len(writer.done_ids)} in {out}, {len(failed)} failed, {len(missing)} missing on disk")
    for video_id, reason in list(failed.items())[:10]:
        log(f"  failed: {video_id}: {reason}")
    return summary


@contextmanager
def _removed_unless_written(out: Path):
    """An --out this run made, refused before any clip was written (a weights file, features float16 cannot
    hold), is removed again: a directory holding only the lock is no cache, and reads as one to the eye."""
    created = not out.exists()
    try:
        yield
    except BaseException:
        if created and out.is_dir() and {p.name for p in out.iterdir()} <= {LOCK}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def engine(config: ExtractConfig, log=print):
    """The function that turns the planned clips into features in `writer`: `featurise` here (decoding
    threads and one model in this process) or, with `engine = "ray"`, the same on a Ray cluster."""
    if config.engine == "ray":
        from functools import partial

        from ucfpipe.stage_one import ray_engine

        ray_engine.import_ray()
        return partial(ray_engine.featurise, log=log)
    return featurise


def featurise(todo: list[datasets.Clip], config: ExtractConfig, writer, model=None, progress: bool = True) -> tuple[dict, float]:
    """Decode `todo` in threads, run the backbone on batches spanning clips, hand finished clips to `writer`.
    Returns ({video_id: why it could not be read}, frames/s through the model). Ctrl-C keeps finished clips."""
    from tqdm import tqdm

    if model is None:
        from ucfpipe.models.extractor import build_extractor_for

        model = build_extractor_for(config)
    frames_per_clip = config.frames * len(config.view_names())
    batcher = _Batcher(model, config.batch_size, (config.size, config.size, 3), total_frames=len(todo) * frames_per_clip)
    # Bounded in clips: enough decoded clips to fill two batches, so memory stays flat.
    results: queue.Queue = queue.Queue(maxsize=config.workers + 2 * -(-batcher.capacity // frames_per_clip))
    stop = threading.Event()
    threads = _decode_clips(todo, config, results, stop)
    bar = tqdm(total=len(todo), unit="clip", disable=not progress, smoothing=0.1, dynamic_ncols=True)
    failed: dict[str, str] = {}
    model_start = time.time()

    def store(finished: list[_Pending]) -> None:
        if finished:
            check_storable([p.outputs for p in finished], config)
        for pending in finished:
            # The model saw the views' frames one after another: (V*T, ...) -> (V, T, ...).
            features = pending.outputs.reshape(pending.frame_indices.shape + pending.outputs.shape[1:])
            writer.add(ClipFeatures(
                pending.clip.video_id, pending.clip.label, pending.clip.group, pending.num_frames,
                pending.fps, pending.frame_indices, features.astype(config.dtype), pending.source,
            ))
        bar.update(len(finished))
        bar.set_postfix(frames_s=f"{batcher.frames_done / max(time.time() - model_start, 1e-9):.1f}", failed=len(failed))

    try:
        live = len(threads)
        while live:
            item = results.get()
            if item is None:
                live -= 1
                continue
            clip, sampled, error, source = item
            if error is not None:
                failed[clip.video_id] = error
                bar.update(1)
                continue
            frames = sampled.frames.reshape((-1,) + sampled.frames.shape[2:])
            store(batcher.add(_Pending(clip, frames, sampled.frame_indices, sampled.num_frames, sampled.fps, source)))
        store(batcher.run())
    except KeyboardInterrupt:
        stop.set()
        writer.flush()  # clips whose features are complete are kept
        bar.close()
        raise Interrupted(
            f"interrupted: {len(writer.done_ids)} clips are safely in {writer.directory}; rerun the same command to resume"
        ) from None
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        bar.close()
    writer.flush()
    return failed, batcher.frames_done / max(time.time() - model_start, 1e-9)


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


def _write_manifest(out: Path, config: ExtractConfig, settings: dict, cache_fingerprint: str, writer,
                    clips: list, missing: list, failed: dict, part: dict, last_run: dict) -> None:
    from ucfpipe.core.provenance import versions

    write_manifest(
        out, fingerprint=cache_fingerprint, settings=settings, config=recorded(config), versions=versions(),
        shards=writer.shards, checksums=writer.checksums, num_clips=len(writer.done_ids),
        report={"listed": len(clips) + len(missing), "missing": [c.video_id for c in missing], "failed": failed},
        part=part, last_run=last_run,
    )
