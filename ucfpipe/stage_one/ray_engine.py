"""Stage one on a Ray cluster (`extract --engine ray`): decoding on CPU tasks anywhere in the cluster, the backbone
in an actor pool (one actor per GPU), the cache written here exactly as the local engine writes it.

`extract.run` plans as always (lock, verified shards, changed clips, what is still to do) and calls `featurise`
below instead of the local one. Ray Data gets the clips to do as rows of paths (never bytes): a task decodes
and samples a few clips on one CPU, an actor runs the backbone on batches of frames (the local engine's
`_Batcher`, so the same batch shapes and padding), and this process takes finished clips as they stream back
and hands them to the one ShardWriter: a clip is added once (by id), the manifest last. Ray retries tasks and
restarts actors whose worker or node died; Ray Data's no-progress timeout ends a run that cannot go on in one
line instead of hanging. Ray is imported only here, and only when this engine runs.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.format import ClipFeatures, Source
from ucfpipe.config import ExtractConfig
from ucfpipe.core import interrupts
from ucfpipe.core.quiet import stderr_lines_dropped
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.stage_one.extract import _Batcher, _Pending, check_storable, decode_clip

INSTALL = "pip install 'ucfpipe[ray]'"
CONNECT_SECONDS = 30.0  # an --address that does not answer in this long is refused
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


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (needs pandas and pyarrow, which the extra brings)
    except ImportError as err:
        raise UcfpipeError(f"--engine ray needs Ray Data ({err.name or err} is not installed): {INSTALL}, "
                           "or pass --engine local") from None
    return ray


# -- the cluster ------------------------------------------------------------------------------------------------
# A Ray head's GCS speaks gRPC, so HTTP/2: to the client's connection preface and an empty SETTINGS frame it
# answers with its own SETTINGS frame at once (RFC 9113, 3.4). A web server (the dashboard's port, passed by
# mistake) answers otherwise or hangs up, and a listener that is no server says nothing: ray.init would retry
# either for minutes, in C++ code that a SIGTERM does not interrupt.
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
SETTINGS_FRAME = 4
ANSWER_SECONDS = 5.0  # a GCS answers the preface in milliseconds


def _check_answers(ray, address: str) -> str:
    """HOST:PORT of `address` ("auto": the cluster `ray start` runs on this machine, or RAY_ADDRESS), once a TCP
    connection to it succeeded within CONNECT_SECONDS and it answered as a gRPC server (a Ray head's GCS) within
    ANSWER_SECONDS."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except (ValueError, ConnectionError) as err:
        if address == "auto":  # Ray's own text asks for an --address flag or RAY_ADDRESS
            resolved = None
        else:
            raise UcfpipeError(f"--address {address} is no Ray address ({err}); pass auto or HOST:PORT of the head node") from None
    if not resolved:
        raise UcfpipeError(f"--address {address}: no Ray cluster is running on this machine; start one with "
                           "`ray start --head`, pass HOST:PORT of another head node, or drop --address to let the run "
                           "start its own (docs/ray.md)")
    named = resolved if address == "auto" else address  # Ray turns 127.0.0.1 into this machine's address
    host, _, port = named.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS) as connection:
            why = _not_grpc(connection)
    except (OSError, ValueError) as err:
        raise UcfpipeError(f"the Ray cluster at {named} does not answer ({getattr(err, 'strerror', None) or err}); "
                           "check that `ray start --head` runs there and the port is open, or pass another --address") from None
    if why:
        raise UcfpipeError(f"{named} is not a Ray head node ({why}); pass the address `ray start --head` printed "
                           "(its GCS port, 6379 by default, not the dashboard's 8265) as --address")
    return resolved


def _not_grpc(connection: socket.socket) -> str:
    """Why the server on `connection` is no gRPC server, or "" if it answered the HTTP/2 preface as one.
    TLS clusters (RAY_USE_TLS) speak TLS first: for them the connection alone counts."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return ""
    deadline = time.monotonic() + ANSWER_SECONDS
    connection.sendall(HTTP2_PREFACE)
    head = b""
    while len(head) < 9:
        connection.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = connection.recv(9 - len(head))
        except TimeoutError:
            return f"it said nothing within {ANSWER_SECONDS:g} s"
        if not chunk:
            break
        head += chunk
    if len(head) == 9 and head[3] == SETTINGS_FRAME:
        return ""
    if head.startswith(b"HTTP/"):
        return "it answers in HTTP/1, as a web server does"
    return "it closed the connection" if not head else "it answered, but not as a gRPC server"


@contextmanager
def cluster(address: str):
    """Connected to the cluster at `address`, or, with "", to one started on this machine for the run (in its own
    temporary directory) and shut down when the run ends, however it ends: no Ray process outlives the run."""
    ray = import_ray()
    # ray.init replaces SIGTERM's handler with one that exits with status 15, skipping the writer's flush:
    # the CLI's handlers (Ctrl-C and SIGTERM -> 130/143 with finished clips kept) are put back after it.
    handlers = {number: signal.getsignal(number) for number in interrupts.SIGNALS} \
        if threading.current_thread() is threading.main_thread() else {}
    temp = None
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address:
            resolved = _check_answers(ray, address)
            try:
                _init(ray, handlers, address=resolved, **quiet)
            except Exception as err:  # ConnectionError, AuthenticationError, a version mismatch: Ray says which
                raise UcfpipeError(f"cannot join the Ray cluster at {resolved}: {_first_line(err)} (docs/ray.md)") from None
        else:
            # A short path: Ray's socket names must fit in 107 bytes.
            temp = tempfile.mkdtemp(prefix="ucfpipe-ray-", dir="/tmp")
            _init(ray, handlers, address="local", _temp_dir=temp, include_dashboard=False, **quiet)
        for number, handler in handlers.items():
            signal.signal(number, handler)
        yield ray
    finally:
        ray.shutdown()
        for number, handler in handlers.items():
            signal.signal(number, handler)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)


def _init(ray, handlers: dict, **settings) -> None:
    """ray.init, where a SIGTERM during the start ends as anywhere else in the run (143, one line): Ray's own
    handler, set first thing, would end the command with sys.exit(15)."""
    try:
        ray.init(**settings)
    except SystemExit as stop:
        if stop.code != signal.SIGTERM or not handlers:
            raise
        signal.signal(signal.SIGTERM, handlers[signal.SIGTERM])
        signal.raise_signal(signal.SIGTERM)  # ours: noted, and raised as a KeyboardInterrupt
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def check_workers_read(ray, videos: Path, relative_path: str) -> None:
    """Every node with CPUs opens one listed clip before any work is sent: a path the driver sees and the workers
    do not (no shared file system, another mount point) would otherwise fail every clip one by one."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0, max_retries=0)
    def can_read(path: str):
        try:
            with open(path, "rb") as file:
                file.read(1)
            return None
        except OSError as err:
            return err.strerror or str(err)

    path = str(videos / relative_path)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    futures = {n["NodeManagerAddress"]: can_read.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(path) for n in nodes}
    try:
        answers = dict(zip(futures, ray.get(list(futures.values()), timeout=120)))
    except ray.exceptions.GetTimeoutError:
        raise UcfpipeError("the Ray nodes did not run a task within 120 s; check `ray status`") from None
    for node, why in answers.items():
        if why:
            raise UcfpipeError(f"the Ray workers on {node} cannot read {path} ({why}): every node must see --videos "
                               "at the same absolute path (a shared file system), or pass --engine local")


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
            batcher = _Batcher(self.model, self.batch_size, self.frame_shape, total_frames=len(done) * frames.shape[1])
            finished = []
            for i in done:
                finished += batcher.add(_Pending(i, frames[i], indices[i], 0, 0.0))
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
    """`extract.featurise` on a Ray cluster: the same arguments (`model` is ignored: each actor builds its own)
    and the same result, ({video_id: why it could not be read}, frames/s through the model after the first
    clip came back). Ctrl-C and SIGTERM keep finished clips; so does a run Ray cannot finish."""
    from tqdm import tqdm

    log = log or (lambda *_: None)
    videos = Path(config.videos).resolve()  # the workers' working directory is not this one
    by_id = {clip.video_id: clip for clip in todo}
    failed: dict[str, str] = {}
    frames_done, twice = 0, 0
    with cluster(config.address) as ray, ExitStack() as quiet:
        # Ray's own warnings, each by its text, while the run goes on (the cluster's processes started first:
        # they must not hold the filter's pipe)
        quiet.enter_context(warnings.catch_warnings())
        for text in RAY_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(text), category=DeprecationWarning)
        quiet.enter_context(stderr_lines_dropped(RAY_LINES))
        check_workers_read(ray, videos, todo[0].relative_path)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours counts clips written, theirs blocks
        context.print_on_execution_start = False
        context.execution_no_progress_timeout_s = float(os.environ.get(NO_PROGRESS_VARIABLE, NO_PROGRESS_SECONDS))
        context.raise_original_map_exception = True  # a UcfpipeError in an actor (out of memory) stays one line
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = build_dataset(ray, todo, config, videos)
        bar = tqdm(total=len(todo), unit="clip", disable=not progress, smoothing=0.1, dynamic_ncols=True)
        started, first = time.time(), None
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                interrupts.check()
                if first is None:
                    first = time.time()
                stored = []
                for i, video_id in enumerate(batch["video_id"]):
                    video_id = str(video_id)
                    if video_id in writer.done_ids or video_id in failed:
                        twice += 1  # a task Ray ran again after its worker died: written once
                        continue
                    if batch["error"][i]:
                        failed[video_id] = str(batch["error"][i])
                        continue
                    stored.append(i)
                if stored:
                    check_storable([batch["features"][i] for i in stored], config)
                for i in stored:
                    clip = by_id[str(batch["video_id"][i])]
                    writer.add(ClipFeatures(clip.video_id, clip.label, clip.group, int(batch["num_frames"][i]),
                                            float(batch["fps"][i]), batch["frame_indices"][i],
                                            batch["features"][i].astype(config.dtype), _source_of(batch["source"][i])))
                    frames_done += batch["frame_indices"][i].size
                bar.update(len(stored) + sum(1 for i in range(len(batch["video_id"])) if batch["error"][i]))
        except KeyboardInterrupt:
            writer.flush()  # clips whose features are complete are kept
            raise Interrupted(f"interrupted: {len(writer.done_ids)} clips are safely in {writer.directory}; "
                              "rerun the same command to resume") from None
        except UcfpipeError:
            writer.flush()
            raise
        except Exception as err:
            writer.flush()
            raise _ray_failure(err, writer) from None
        finally:
            bar.close()
        writer.flush()
    if twice:
        log(f"  {twice} clips came back twice from Ray (a task run again after its worker died); each was written once")
    after = time.time() - (first or started)
    if first is not None:
        log(f"  Ray: first clip back after {first - started:.1f} s (cluster start, actors loading the model)")
    return failed, frames_done / max(after, 1e-9)


def _ray_failure(err: Exception, writer) -> UcfpipeError:
    kept = f"{len(writer.done_ids)} clips are safely in {writer.directory}; rerun the same command to resume"
    if type(err).__name__ == "ExecutionTimeoutError":
        limit = float(os.environ.get(NO_PROGRESS_VARIABLE, NO_PROGRESS_SECONDS))
        return UcfpipeError(f"the Ray run made no progress for {limit:.0f} s (a node lost? no free CPU or GPU for the "
                            f"model actors? see `ray status`); {kept} ({NO_PROGRESS_VARIABLE} sets the limit)")
    return UcfpipeError(f"the Ray run failed: {type(err).__name__}: {_first_line(err)}; {kept}")
