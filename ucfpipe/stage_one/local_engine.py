"""Stage one's local engine (`extract --engine local`, the default): decoding threads and one model in this
process.

Decoding threads feed the model through a bounded queue (memory stays flat for any number of clips); frames of
many clips share one batch (`featurising.Batcher`: full batches share one shape, so JAX compiles few graphs);
finished clips go to the shard writer. `extract.run` plans the run and calls `featurise` below.
"""

from __future__ import annotations

import queue
import threading
import time

from ucfpipe import datasets
from ucfpipe.cache.format import ClipFeatures
from ucfpipe.config import ExtractConfig
from ucfpipe.core.progress import progress_bar
from ucfpipe.stage_one.featurising import Batcher, Pending, check_storable, decode_clips, interrupted


def featurise(todo: list[datasets.Clip], config: ExtractConfig, writer, model=None, progress: bool = True) -> tuple[dict, float]:
    """Decode `todo` in threads, run the backbone on batches spanning clips, hand finished clips to `writer`.
    Returns ({video_id: why it could not be read}, frames/s through the model). Ctrl-C keeps finished clips."""
    if model is None:
        from ucfpipe.models.extractor import build_extractor_for

        model = build_extractor_for(config)
    frames_per_clip = config.frames * len(config.view_names())
    batcher = Batcher(model, config.batch_size, (config.size, config.size, 3), total_frames=len(todo) * frames_per_clip)
    # Bounded in clips: enough decoded clips to fill two batches, so memory stays flat.
    results: queue.Queue = queue.Queue(maxsize=config.workers + 2 * -(-batcher.capacity // frames_per_clip))
    stop = threading.Event()
    threads = decode_clips(todo, config, results, stop)
    bar = progress_bar(len(todo), "clip", progress)
    failed: dict[str, str] = {}
    model_start = time.time()

    def store(finished: list[Pending]) -> None:
        _store(finished, config, writer)
        bar.update(len(finished))
        bar.set_postfix(frames_s=f"{batcher.frames_done / max(time.time() - model_start, 1e-9):.1f}", failed=len(failed))

    try:
        for clip, sampled, error, source in _decoded(results, len(threads)):
            if error is not None:
                failed[clip.video_id] = error
                bar.update(1)
                continue
            frames = sampled.frames.reshape((-1,) + sampled.frames.shape[2:])
            store(batcher.add(Pending(clip, frames, sampled.frame_indices, sampled.num_frames, sampled.fps, source)))
        store(batcher.run())
    except KeyboardInterrupt:
        stop.set()
        writer.flush()  # clips whose features are complete are kept
        bar.close()
        raise interrupted(writer) from None
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        bar.close()
    writer.flush()
    return failed, batcher.frames_done / max(time.time() - model_start, 1e-9)


def _decoded(results: queue.Queue, threads: int):
    """The decoded clips in `results` until each of the `threads` decoding threads said it is done (None)."""
    while threads:
        item = results.get()
        if item is None:
            threads -= 1
        else:
            yield item


def _store(finished: list[Pending], config: ExtractConfig, writer) -> None:
    if finished:
        check_storable([p.outputs for p in finished], config)
    for pending in finished:
        # The model saw the views' frames one after another: (V*T, ...) -> (V, T, ...).
        features = pending.outputs.reshape(pending.frame_indices.shape + pending.outputs.shape[1:])
        writer.add(ClipFeatures(
            pending.clip.video_id, pending.clip.label, pending.clip.group, pending.num_frames,
            pending.fps, pending.frame_indices, features.astype(config.dtype), pending.source,
        ))
