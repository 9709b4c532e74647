"""Stage one on a Ray cluster (`extract --engine ray`): decoding on CPU tasks anywhere in the cluster, the backbone
in an actor pool (one actor per GPU), the cache written here exactly as the local engine writes it.

`extract.run` plans as always (lock, verified shards, changed clips, what is still to do) and calls `featurise`
below instead of `local_engine.featurise`, on the cluster `ray_cluster` connects to. Ray Data gets the clips to
do as rows of paths (never bytes): a task decodes and samples a few clips on one CPU (`featurising.decode_clip`),
an actor runs the backbone on batches of frames (`featurising.Batcher`, the local engine's, so the same batch
shapes and padding), and this process takes finished clips as they stream back
and hands them to the one ShardWriter: a clip is added once (by id), the manifest last. Ray retries tasks and
restarts actors whose worker or node died; Ray Data's no-progress timeout ends a run that cannot go on in one
line instead of hanging. Ray is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.format import ClipFeatures, Source
from ucfpipe.config import ExtractConfig
from ucfpipe.core import interrupts
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.progress import progress_bar
from ucfpipe.core.quiet import stderr_lines_dropped
from ucfpipe.stage_one.featurising import Batcher, Pending, check_storable, decode_clip, interrupted, kept
from ucfpipe.stage_one.ray_cluster import check_workers_read, cluster, first_line

# Ray Data ends a run in which no block moved for this long (a node lost with the only model actor, no GPU
# left for one): RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S overrides it, as Ray documents.
NO_PROGRESS_SECONDS = 600.0
NO_PROGRESS_VARIABLE = "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S"
CLIPS_PER_DECODE_TASK = 4  # small: a lost task costs little, and decoding spreads over every CPU early
DECODE_WORKER_BYTES = 160 * 2**20
CPUS_PER_CPU_ACTOR = 4  # CPU-only clusters: one model actor per this many CPUs (its threads use the node's cores)

# Ray's own warnings on every run, each by its exact text (ours are fixed, not filtered; other warnings pass):
# Ray Data's DataContext warns about its own deprecated fields whenever it copies itself to the workers...
RAY_WARNINGS = ("`use_push_based_shuffle` is deprecated", "`use_polars` is deprecated", "`use_arrow_tensor_v2` is deprecated")
# ... its progress manager says that progress bars are off (ours counts clips), and the driver's core worker (C++,
# on fd 2) that an actor whose constructor arguments sit in the object store may not restart once they are
# lost: Ray Data puts them there itself, and holds them for the whole run.
RAY_LINES = re.compile(
    r".* -- " + re.escape("Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`.")
    + r"|\[[^]]*\] core_worker\.cc:\d+: " + re.escape("Actor with class name: 'MapWorker(MapBatches(Backbone))' and ID: '")
    + r"[0-9a-f]+" + re.escape("' has constructor arguments in the object store and max_restarts > 0. If the arguments in the "
                               "object store go out of scope or are lost, the actor restart will fail. See "
                               "https://github.com/ray-project/ray/issues/53727 for more details."))


# -- the two stages ---------------------------------------------------------------------------------------------
def decode_batch(batch: dict, videos: str, frames: int, size: int, view_names: tuple) -> dict:
    """A Ray Data CPU task: decode and sample each row's clip. A clip that cannot be read keeps its row (zeros,
    and why in `error`), so the driver reports it as the local engine does."""
    count, views = len(batch["video_id"]), len(view_names)
    out = {
        "video_id": batch["video_id"],
        "frames": np.zeros((count, views * frames, size, size, 3), np.uint8),
        "frame_indices": np.zeros((count, views, frames), np.int32),
        "num_frames": np.zeros(count, np.int64),
        "fps": np.zeros(count, np.float64),
        "source": np.full(count, "", object),
        "error": np.full(count, "", object),
    }
    for i, relative in enumerate(batch["relative_path"]):
        sampled, error, source = decode_clip(Path(videos), str(relative), frames, size, view_names)
        if error is not None:
            out["error"][i] = error
            continue
        out["frames"][i] = sampled.frames.reshape((-1,) + sampled.frames.shape[2:])
        out["frame_indices"][i] = sampled.frame_indices
        out["num_frames"][i], out["fps"][i] = sampled.num_frames, sampled.fps
        out["source"][i] = _source_text(source)
    return out


def _source_text(source: Source) -> str:
    import json

    return json.dumps([source.path, source.size, source.mtime_ns, source.digest])


def _source_of(text: str) -> Source:
    import json

    return Source(*json.loads(text))


class Backbone:
    """A Ray Data actor: the backbone, built once per actor, run on the decoded clips of each batch."""

    def __init__(self, config: ExtractConfig):
        # Before Keras loads TensorFlow: its GPU memory grows as needed instead of taking the whole card at
        # start (the actor shares the node with decode tasks and Ray's object store). JAX is unaffected.
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from ucfpipe.models.extractor import build_extractor_for

        self.model = build_extractor_for(config)
        self.batch_size = config.batch_size
        self.frame_shape = (config.size, config.size, 3)
        self.feature_shape = tuple(self.model.output_shape[1:])

    def __call__(self, batch: dict) -> dict:
        frames, indices = batch["frames"], batch["frame_indices"]
        done = [i for i, error in enumerate(batch["error"]) if not error]
        features = np.zeros(indices.shape + self.feature_shape, np.float32)
        if done:
            batcher = Batcher(self.model, self.batch_size, self.frame_shape, total_frames=len(done) * frames.shape[1])
            finished = []
            for i in done:
                finished += batcher.add(Pending(i, frames[i], indices[i], 0, 0.0))
            finished += batcher.run()
            for pending in finished:
                features[pending.clip] = pending.outputs.reshape(indices.shape[1:] + pending.outputs.shape[1:])
        return {name: batch[name] for name in ("video_id", "frame_indices", "num_frames", "fps", "source", "error")} \
            | {"features": features}


def clips_per_model_call(batch_size: int, frames_per_clip: int) -> int:
    """Clips an actor gets at once: when a few clips fill whole batches exactly (batch 64, 40 frames: 8 clips,
    5 batches), that many, so no call pads a partial batch; otherwise enough for one batch."""
    exact = math.lcm(batch_size, frames_per_clip) // frames_per_clip
    return exact if exact <= 32 else -(-batch_size // frames_per_clip)


def model_actors(ray) -> tuple[int, dict]:
    """(actors, their resources): one per GPU of the cluster with `num_gpus=1`; without GPUs one CPU actor per
    CPUS_PER_CPU_ACTOR CPUs (at least one). Both differ from a decode task's one CPU and no GPU, which keeps Ray
    Data from fusing the stages into one (it fuses a task stage into an actor stage of the same resources)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, {"num_gpus": 1}
    return max(1, int(resources.get("CPU", 1)) // CPUS_PER_CPU_ACTOR), {"num_cpus": 1}


def build_dataset(ray, todo: list[datasets.Clip], config: ExtractConfig, videos: Path):
    """The Ray Data pipeline: rows of paths -> decode tasks (CPU) -> model actors -> rows of features."""
    frames_per_clip = config.frames * len(config.view_names())
    actors, actor_resources = model_actors(ray)
    rows = [{"video_id": c.video_id, "relative_path": c.relative_path} for c in todo]
    # A decode task's logical memory (a worker's own ~110 MiB, measured, plus its frames twice over for the
    # decoder's buffers) is also what sets it apart from a CPU actor's resources: without a difference Ray
    # Data fuses decoding into the actors.
    decode_memory = DECODE_WORKER_BYTES + 2 * CLIPS_PER_DECODE_TASK * frames_per_clip * config.size * config.size * 3
    return (
        ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // CLIPS_PER_DECODE_TASK)))
        .map_batches(decode_batch, batch_size=CLIPS_PER_DECODE_TASK, batch_format="numpy", num_cpus=1,
                     memory=decode_memory, fn_kwargs={"videos": str(videos), "frames": config.frames,
                                                      "size": config.size, "view_names": config.view_names()})
        .map_batches(Backbone, batch_size=clips_per_model_call(config.batch_size, frames_per_clip), batch_format="numpy",
                     compute=ray.data.ActorPoolStrategy(size=actors), fn_constructor_kwargs={"config": config}, **actor_resources)
    )


def physical_plan(ds) -> list[str]:
    """The operators Ray Data will run, from `ds.explain()`'s optimised physical plan, first to last, e.g.
    ['Input', 'MapBatches(decode_batch)', 'MapBatches(Backbone)']: decoding and the model must be two (a fused
    'MapBatches(decode_batch)->MapBatches(Backbone)' would decode inside the model actors, one clip at a time
    per GPU)."""
    import io
    from contextlib import redirect_stdout

    text = io.StringIO()
    with redirect_stdout(text):
        ds.explain()
    optimised = text.getvalue().split("Physical Plan (Optimized)")[-1].splitlines()[1:]
    names = [line.split("[", 1)[1].rstrip("]") for line in optimised if "[" in line]
    return names[::-1]


# -- the driver -------------------------------------------------------------------------------------------------
def featurise(todo: list[datasets.Clip], config: ExtractConfig, writer, model=None, progress: bool = True,
              log=None) -> tuple[dict, float]:
    """`local_engine.featurise` on a Ray cluster: the same arguments (`model` is ignored: each actor builds its
    own) and the same result, ({video_id: why it could not be read}, frames/s through the model after the first
    clip came back). Ctrl-C and SIGTERM keep finished clips; so does a run Ray cannot finish."""
    log = log or (lambda *_: None)
    videos = Path(config.videos).resolve()  # the workers' working directory is not this one
    received = _Received({clip.video_id: clip for clip in todo}, config, writer)
    with cluster(config.address) as ray, ExitStack() as quiet:
        _quiet_ray(ray, quiet)
        check_workers_read(ray, videos, todo[0].relative_path)
        ds = build_dataset(ray, todo, config, videos)
        bar = progress_bar(len(todo), "clip", progress)
        started, first = time.time(), None
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                interrupts.check()
                first = first or time.time()
                bar.update(received.add(batch))
        except KeyboardInterrupt:
            writer.flush()  # clips whose features are complete are kept
            raise interrupted(writer) from None
        except UcfpipeError:
            writer.flush()
            raise
        except Exception as err:
            writer.flush()
            raise _ray_failure(err, writer) from None
        finally:
            bar.close()
        writer.flush()
    if received.twice:
        log(f"  {received.twice} clips came back twice from Ray (a task run again after its worker died); each was written once")
    if first is not None:
        log(f"  Ray: first clip back after {first - started:.1f} s (cluster start, actors loading the model)")
    return received.failed, received.frames_done / max(time.time() - (first or started), 1e-9)


def _quiet_ray(ray, quiet: ExitStack) -> None:
    """Ray's own warnings dropped, each by its text, while the run goes on (the cluster's processes started
    first: they must not hold the filter's pipe); Ray Data set for this run."""
    quiet.enter_context(warnings.catch_warnings())
    for text in RAY_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(text), category=DeprecationWarning)
    quiet.enter_context(stderr_lines_dropped(RAY_LINES))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts clips written, theirs blocks
    context.print_on_execution_start = False
    context.execution_no_progress_timeout_s = float(os.environ.get(NO_PROGRESS_VARIABLE, NO_PROGRESS_SECONDS))
    context.raise_original_map_exception = True  # a UcfpipeError in an actor (out of memory) stays one line
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class _Received:
    """The clips streaming back from the model actors, into the one ShardWriter: each once (by id)."""

    def __init__(self, by_id: dict, config: ExtractConfig, writer):
        self.by_id, self.config, self.writer = by_id, config, writer
        self.failed: dict[str, str] = {}
        self.frames_done = self.twice = 0

    def add(self, batch: dict) -> int:
        """Store a batch's clips; returns how many clips it finished (written or failed)."""
        stored, finished = [], 0
        for i, video_id in enumerate(batch["video_id"]):
            video_id = str(video_id)
            if video_id in self.writer.done_ids or video_id in self.failed:
                self.twice += 1  # a task Ray ran again after its worker died: written once
            elif batch["error"][i]:
                self.failed[video_id] = str(batch["error"][i])
                finished += 1
            else:
                stored.append(i)
        if stored:
            check_storable([batch["features"][i] for i in stored], self.config)
        for i in stored:
            clip = self.by_id[str(batch["video_id"][i])]
            self.writer.add(ClipFeatures(clip.video_id, clip.label, clip.group, int(batch["num_frames"][i]),
                                         float(batch["fps"][i]), batch["frame_indices"][i],
                                         batch["features"][i].astype(self.config.dtype), _source_of(batch["source"][i])))
            self.frames_done += batch["frame_indices"][i].size
        return finished + len(stored)


def _ray_failure(err: Exception, writer) -> UcfpipeError:
    if type(err).__name__ == "ExecutionTimeoutError":
        limit = float(os.environ.get(NO_PROGRESS_VARIABLE, NO_PROGRESS_SECONDS))
        return UcfpipeError(f"the Ray run made no progress for {limit:.0f} s (a node lost? no free CPU or GPU for the "
                            f"model actors? see `ray status`); {kept(writer)} ({NO_PROGRESS_VARIABLE} sets the limit)")
    return UcfpipeError(f"the Ray run failed: {type(err).__name__}: {first_line(err)}; {kept(writer)}")
