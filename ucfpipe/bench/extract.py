"""`ucfpipe bench`: stage one's throughput measured side by side, on the same generated clips, in one run.

Each measurement runs in its own process so its peak memory (RSS) is its own:
- `model`: VGG16 alone on uint8 batches of the extraction's shape: the ceiling for end to end;
- `extract`: ucfpipe's whole stage one (decode + resize + VGG16 + HDF5 write);
- `naive`: the way common tutorials do it: decode every frame of a clip into memory, pick T, preprocess
  in NumPy, `model.predict` per clip, one .npy file per clip;
- `decode`: decoding and resizing alone, ucfpipe's way (threads, only the sampled frames converted);
- `extract-ray` (with `engines` naming ray): the same stage one through `--engine ray` on a Ray cluster this
  process starts, timed from the call (cluster start and model actors included) and after the first clip.
All model timings start after one warm-up batch, so graph compilation is not counted against anybody.
The naive peer's features are compared with ucfpipe's: both must compute the same thing.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODES = ("model", "extract", "naive", "decode")


def _peak_rss_mib() -> float:
    """This process's peak resident memory. On Linux, VmHWM of its own address space: getrusage's ru_maxrss
    survives exec, so a child started by a parent that holds TensorFlow (1 GiB) would report at least the
    parent's size whatever it used itself."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def bench_dataset(root: Path, num_clips: int) -> dict:
    """`num_clips` (a multiple of 8) clips of UCF-101's frame size, in UCF-101's layout."""
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(root, num_classes=2, num_groups=4, clips_per_group=math.ceil(num_clips / 8),
                            frame_size=(320, 240), min_frames=60, max_frames=200, seed=0)


def _warm_model(args: dict):
    from ucfpipe.models.extractor import build_extractor

    model = build_extractor(args["weights"], "block5_conv3", "avg", args["size"], args["precision"], 0)
    model.predict_on_batch(np.zeros((args["batch_size"], args["size"], args["size"], 3), np.uint8))
    return model


def _clip_paths(videos: str) -> list[Path]:
    return sorted(Path(videos).glob("*/*.avi"))


def measure(mode: str, args: dict) -> dict:
    """One measurement, in this process. Returns frames/s and what was done."""
    from ucfpipe.video.decode import read_clip

    videos, splits, frames, size = args["videos"], args["splits"], args["frames"], args["size"]
    paths = _clip_paths(videos)
    if mode == "decode":
        from concurrent.futures import ThreadPoolExecutor

        start = time.perf_counter()
        with ThreadPoolExecutor(args["workers"]) as pool:
            decoded = sum(c.num_frames for c in pool.map(lambda p: read_clip(p, frames, size), paths))
        seconds = time.perf_counter() - start
        return {"frames": frames * len(paths), "decoded_frames": decoded, "seconds": seconds}
    model = _warm_model(args) if mode != "extract-ray" else None
    if mode == "model":
        total = frames * len(paths)
        batch = np.random.default_rng(0).integers(0, 256, (args["batch_size"], size, size, 3), dtype=np.uint8)
        start = time.perf_counter()
        for _ in range(math.ceil(total / args["batch_size"])):
            np.asarray(model.predict_on_batch(batch))
        return {"frames": total, "seconds": time.perf_counter() - start}
    if mode == "extract":
        from ucfpipe.config import ExtractConfig
        from ucfpipe.stage_one import extract

        config = ExtractConfig(videos=videos, splits=splits, out=args["out"], frames=frames, size=size,
                               weights=args["weights"], precision=args["precision"], batch_size=args["batch_size"],
                               workers=args["workers"], shard_clips=64)
        start = time.perf_counter()
        summary = extract.run(config, progress=False, log=lambda *_: None, model=model)
        return {"frames": frames * summary["extracted"], "seconds": time.perf_counter() - start}
    if mode == "extract-ray":
        from ucfpipe.config import ExtractConfig
        from ucfpipe.stage_one import extract

        config = ExtractConfig(videos=videos, splits=splits, out=args["out"], frames=frames, size=size,
                               weights=args["weights"], precision=args["precision"], batch_size=args["batch_size"],
                               workers=args["workers"], shard_clips=64, engine="ray")
        start = time.perf_counter()
        summary = extract.run(config, progress=False, log=lambda *_: None)
        seconds = time.perf_counter() - start
        done = frames * summary["extracted"]
        # frames_per_second counts from the first clip back; what came before it is the start-up.
        return {"frames": done, "seconds": seconds, "after_startup_frames_per_second": summary["frames_per_second"],
                "startup_seconds": seconds - done / max(summary["frames_per_second"], 1e-9)}
    if mode == "naive":
        start = time.perf_counter()
        _naive_extract(paths, videos, args["out"], frames, size, args["weights"], args["precision"])
        return {"frames": frames * len(paths), "seconds": time.perf_counter() - start}
    raise ValueError(f"unknown mode {mode!r}")


def _naive_extract(paths, videos, out, frames, size, weights, precision) -> None:
    """The tutorial way, kept deliberately plain: every frame into memory, preprocessing in NumPy outside
    the model, `model.predict` on one clip at a time, a .npy per clip."""
    import cv2
    import keras

    from ucfpipe.models.extractor import build_extractor
    from ucfpipe.video.decode import decoded_frames, open_video, uniform_frame_indices

    # Same weights as ucfpipe's model, without its in-model preprocessing: take its VGG16 part.
    full = build_extractor(weights, "block5_conv3", "avg", size, precision, 0)
    conv = full.get_layer("vgg16_block5_conv3")
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    out = Path(out)
    for path in paths:
        capture = open_video(path)
        all_frames = [cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for _, frame in decoded_frames(capture)]
        capture.release()
        chosen = [cv2.resize(all_frames[i], (size, size), interpolation=cv2.INTER_AREA)
                  for i in uniform_frame_indices(len(all_frames), frames)]
        x = keras.applications.vgg16.preprocess_input(np.stack(chosen).astype("float32"))
        features = model.predict(x, verbose=0)
        target = out / path.relative_to(videos).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, features)


def _subprocess(mode: str, args: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "ucfpipe.bench.extract", mode, json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark mode {mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_features(cache: Path, naive_out: Path) -> float:
    """Largest relative error between ucfpipe's cached features and the naive peer's, over all clips."""
    from ucfpipe.cache.store import FeatureStore

    worst = 0.0
    with FeatureStore(cache) as store:
        for video_id in store.video_ids:
            ours = store.features([video_id])[0].astype(np.float64)
            theirs = np.load(naive_out / f"{video_id}.npy").astype(np.float64)
            worst = max(worst, float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)))
    return worst


ENGINE_MODES = {"local": "extract", "ray": "extract-ray"}


def run(clip_counts=(8, 16), frames: int = 16, size: int = 64, batch_size: int = 64, workers: int = 2,
        weights: str = "none", precision: str = "float32", work_dir: str | None = None, log=print,
        engines=("local",)) -> dict:
    """All modes on the largest clip count, ucfpipe's extraction (by each of `engines`) also on the others
    (memory must stay flat)."""
    from ucfpipe.core.errors import UcfpipeError

    # The generated dataset has 2 classes x 4 groups, so its clip count is a multiple of 8: checked before any
    # mode runs, so a count it cannot make is refused at once rather than after every measurement.
    if not clip_counts or any(count < 8 or count % 8 for count in clip_counts):
        raise UcfpipeError(f"--clips must be multiples of 8 (2 classes x 4 groups), got {','.join(map(str, clip_counts))}")
    results: dict = {"settings": {"clip_counts": list(clip_counts), "frames": frames, "size": size, "batch_size": batch_size,
                                  "workers": workers, "weights": weights, "precision": precision,
                                  "engines": list(engines)}, "runs": []}
    extracts = tuple(ENGINE_MODES[engine] for engine in engines)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        for count in sorted(clip_counts):
            data = bench_dataset(tmp / f"data{count}", count)
            common = {"videos": data["videos"], "splits": data["splits"], "frames": frames, "size": size,
                      "batch_size": batch_size, "workers": workers, "weights": weights, "precision": precision}
            modes = ("model", *extracts, "naive", "decode") if count == max(clip_counts) else extracts
            for mode in modes:
                out = tmp / f"{mode}{count}"
                log(f"bench: {mode} on {data['num_clips']} clips ...")
                result = _subprocess(mode, {**common, "out": str(out)})
                result.update(mode=mode, clips=data["num_clips"], frames_per_second=result["frames"] / result["seconds"])
                results["runs"].append(result)
            if count == max(clip_counts):
                results["max_feature_relative_error"] = compare_features(tmp / f"{extracts[0]}{count}", tmp / f"naive{count}")
                if len(extracts) > 1:  # the engines write the same cache: the same numbers
                    results["max_engine_relative_error"] = max(
                        compare_caches(tmp / f"{extracts[0]}{count}", tmp / f"{mode}{count}") for mode in extracts[1:])
    by_mode = {(r["mode"], r["clips"]): r for r in results["runs"]}
    largest = max(clip_counts)
    model_fps = by_mode[("model", largest)]["frames_per_second"]
    results["extract_vs_model"] = by_mode[(extracts[0], largest)]["frames_per_second"] / model_fps
    results["extract_vs_naive"] = by_mode[(extracts[0], largest)]["frames_per_second"] / by_mode[("naive", largest)]["frames_per_second"]
    decode = by_mode[("decode", largest)]
    # Decoding threads release the GIL, so the rate per core is the rate over the cores the threads could use.
    results["decode_frames_per_second_per_core"] = decode["frames_per_second"] / min(workers, os.cpu_count() or 1)
    return results


def compare_caches(first: Path, second: Path) -> float:
    """Largest relative difference between two caches' features, clip by clip."""
    from ucfpipe.cache.store import FeatureStore

    worst = 0.0
    with FeatureStore(first) as a, FeatureStore(second) as b:
        assert sorted(a.video_ids) == sorted(b.video_ids) and a.fingerprint == b.fingerprint
        for video_id in a.video_ids:
            x, y = a.features([video_id])[0].astype(np.float64), b.features([video_id])[0].astype(np.float64)
            worst = max(worst, float(np.linalg.norm(x - y) / max(np.linalg.norm(x), 1e-12)))
    return worst


def format_table(results: dict) -> str:
    lines = [f"{'mode':<12}{'clips':>6}{'frames':>8}{'seconds':>9}{'frames/s':>10}{'peak RSS MiB':>14}"
             f"{'start-up s':>12}{'after start-up frames/s':>25}"]
    for r in results["runs"]:
        startup = f"{r['startup_seconds']:>12.1f}{r['after_startup_frames_per_second']:>25.1f}" if "startup_seconds" in r else ""
        lines.append(f"{r['mode']:<12}{r['clips']:>6}{r['frames']:>8}{r['seconds']:>9.2f}{r['frames_per_second']:>10.1f}"
                     f"{r['peak_rss_mib']:>14.0f}{startup}")
    lines.append(f"extract / model-only throughput: {results['extract_vs_model']:.1%}   "
                 f"extract / naive: {results['extract_vs_naive']:.2f}x   "
                 f"max relative feature difference extract vs naive: {results['max_feature_relative_error']:.1e}")
    lines.append(f"decoding alone: {results['decode_frames_per_second_per_core']:.0f} sampled frames/s per core"
                 + (f"   engines' features differ by at most {results['max_engine_relative_error']:.1e} (relative)"
                    if "max_engine_relative_error" in results else ""))
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement in a fresh process: `python -m ucfpipe.bench.extract MODE JSON`
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    outcome = measure(sys.argv[1], json.loads(sys.argv[2]))
    outcome["peak_rss_mib"] = _peak_rss_mib()
    print(json.dumps(outcome))
