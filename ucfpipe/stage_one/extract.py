"""Stage one: every clip named by the split lists -> backbone features per sampled frame, in the feature cache.

This module plans a run (which clips, which part of the list, what the cache already holds or lost), names
the features' settings (the fingerprint), and writes the manifest and summary; an engine does the work in
between: `local_engine` (decoding threads and one model here) or `ray_engine` (a Ray cluster), both built on
`featurising`. The cache is resumable: a rerun extracts only what is missing.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from ucfpipe import datasets
from ucfpipe.cache.format import FORMAT, LOCK, MANIFEST
from ucfpipe.cache.writer import open_for_writing, write_manifest
from ucfpipe.config import ExtractConfig, fingerprint, recorded
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.video.decode import RESIZE_METHOD, SAMPLING_METHOD


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
    """The function that turns the planned clips into features in `writer`: `local_engine.featurise` (decoding
    threads and one model in this process) or, with `engine = "ray"`, `ray_engine.featurise` (the same on a Ray
    cluster). Imported here, when chosen: neither engine imports this module."""
    if config.engine == "ray":
        from functools import partial

        from ucfpipe.stage_one import ray_engine
        from ucfpipe.stage_one.ray_cluster import import_ray

        import_ray()
        return partial(ray_engine.featurise, log=log)
    from ucfpipe.stage_one import local_engine

    return local_engine.featurise


def _write_manifest(out: Path, config: ExtractConfig, settings: dict, cache_fingerprint: str, writer,
                    clips: list, missing: list, failed: dict, part: dict, last_run: dict) -> None:
    from ucfpipe.core.provenance import versions

    write_manifest(
        out, fingerprint=cache_fingerprint, settings=settings, config=recorded(config), versions=versions(),
        shards=writer.shards, checksums=writer.checksums, num_clips=len(writer.done_ids),
        report={"listed": len(clips) + len(missing), "missing": [c.video_id for c in missing], "failed": failed},
        part=part, last_run=last_run,
    )
