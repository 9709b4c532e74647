"""`ucfpipe bench extract`: stage one's throughput measured side by side, on the same generated clips, in one run.

Every measurement runs in its own process (so its peak memory, RSS, is its own), each mode `repeats` times in
interleaved rounds (round 1 runs every mode once, then round 2, ...: a load that comes and goes on a shared
machine falls on every mode alike); the table gives each mode's min/median/max and the ratios of the medians.
- `model`: VGG16 alone on uint8 batches of the extraction's shape;
- `extract`: ucfpipe's whole stage one (decode + sample + resize + VGG16 + HDF5 write);
- `host`: the same stage one with a model that returns zeros of VGG16's output shape at once (decode, sample,
  resize, batch, write): the rate at which this machine could feed an accelerator, per core;
- `naive`: the way common tutorials do it: decode every frame of a clip into memory, pick T, preprocess
  in NumPy, `model.predict` per clip, one .npy file per clip;
- `decode`: decoding and resizing alone, ucfpipe's way (threads, only the sampled frames converted);
- `extract-ray` (with `engines` naming ray): the same stage one through `--engine ray` on a Ray cluster this
  process starts, timed from the call (cluster start and model actors included) and after the first clip.
The ceiling end to end is stated for the machine it ran on: on a CPU the model and decoding share the cores,
so 1 / (1/model + 1/decode); with an accelerator the lower of the two. `modes` picks the peers measured beside
the extraction (all by default); each ratio is given where the modes it needs ran. All model timings start after one
warm-up batch, so graph compilation is not counted against anybody. The naive peer's features are compared
with ucfpipe's: both must compute the same thing.

    python -m ucfpipe.bench.extract MODE JSON     (one measurement: prints one JSON line)
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ucfpipe.bench.memory import peak_rss_mib

MODES = ("model", "extract", "host", "naive", "decode")
PEERS = ("model", "host", "naive", "decode")  # what ucfpipe's extraction is measured beside; `modes` picks them
ENGINE_MODES = {"local": "extract", "ray": "extract-ray"}
FEATURES = 512  # VGG16's block5_conv3, average-pooled: what the host mode's stand-in returns per frame


def bench_dataset(root: Path, num_clips: int) -> dict:
    """`num_clips` (a multiple of 8) clips of UCF-101's size: 320x240, 3 to 10 s at 25 frames/s, in its layout."""
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(root, num_classes=2, num_groups=4, clips_per_group=math.ceil(num_clips / 8),
                            frame_size=(320, 240), min_frames=75, max_frames=250, fps=25.0, seed=0)


# -- one measurement, in its own process ------------------------------------------------------------------------
def _warm_model(args: dict):
    from ucfpipe.models.extractor import build_extractor

    model = build_extractor(args["weights"], "block5_conv3", "avg", args["size"], args["precision"], 0)
    model.predict_on_batch(np.zeros((args["batch_size"], args["size"], args["size"], 3), np.uint8))
    return model


class ZeroModel:
    """The host mode's backbone: zeros of the real one's output shape, at once (no compute, no accelerator)."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((len(batch), FEATURES), np.float32)


def _clip_paths(videos: str) -> list[Path]:
    return sorted(Path(videos).glob("*/*.avi"))


def _accelerator() -> str:
    """The backend's accelerator ("" on a CPU): it decides which ceiling applies."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return "" if jax.devices()[0].platform == "cpu" else jax.devices()[0].device_kind
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_physical_devices("GPU") else ""
    return ""


def _decode(args: dict) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from ucfpipe.video.decode import read_clip

    paths = _clip_paths(args["videos"])
    start = time.perf_counter()
    with ThreadPoolExecutor(args["workers"]) as pool:
        decoded = sum(c.num_frames for c in pool.map(lambda p: read_clip(p, args["frames"], args["size"]), paths))
    return {"frames": args["frames"] * len(paths), "decoded_frames": decoded, "seconds": time.perf_counter() - start}


def _model(args: dict) -> dict:
    model = _warm_model(args)
    total = args["frames"] * len(_clip_paths(args["videos"]))
    batch = np.random.default_rng(0).integers(0, 256, (args["batch_size"], args["size"], args["size"], 3), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(math.ceil(total / args["batch_size"])):
        np.asarray(model.predict_on_batch(batch))
    return {"frames": total, "seconds": time.perf_counter() - start, "accelerator": _accelerator()}


def _stage_one(args: dict, model=None, engine: str = "local") -> dict:
    """ucfpipe's stage one on the clips, into a new cache at `out`."""
    from ucfpipe.config import ExtractConfig
    from ucfpipe.stage_one import extract

    config = ExtractConfig(videos=args["videos"], splits=args["splits"], out=args["out"], frames=args["frames"],
                           size=args["size"], weights=args["weights"], precision=args["precision"],
                           batch_size=args["batch_size"], workers=args["workers"], shard_clips=64, engine=engine)
    import h5py  # noqa: F401  (loaded before the clock starts, as the model is: Keras by the fingerprint's settings)

    extract.feature_settings(config)
    start = time.perf_counter()
    summary = extract.run(config, progress=False, log=lambda *_: None, model=model)
    seconds = time.perf_counter() - start
    done = args["frames"] * summary["extracted"]
    if engine == "local":
        return {"frames": done, "seconds": seconds}
    # frames_per_second counts from the first clip back; what came before it is the start-up.
    return {"frames": done, "seconds": seconds, "after_startup_frames_per_second": summary["frames_per_second"],
            "startup_seconds": seconds - done / max(summary["frames_per_second"], 1e-9)}


def _naive(args: dict) -> dict:
    paths = _clip_paths(args["videos"])
    start = time.perf_counter()
    _naive_extract(paths, args["videos"], args["out"], args["frames"], args["size"], args["weights"], args["precision"])
    return {"frames": args["frames"] * len(paths), "seconds": time.perf_counter() - start}


MEASURES = {"decode": _decode, "model": _model, "naive": _naive, "host": lambda args: _stage_one(args, ZeroModel()),
            "extract": lambda args: _stage_one(args, _warm_model(args)),
            "extract-ray": lambda args: _stage_one(args, engine="ray")}


def measure(mode: str, args: dict) -> dict:
    """One measurement, in this process. Returns frames/s and what was done."""
    if mode not in MEASURES:
        raise ValueError(f"unknown mode {mode!r}")
    return MEASURES[mode](args)


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


def _subprocess(mode: str, args: dict) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "ucfpipe.bench.extract", mode, json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark mode {mode} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the rounds -------------------------------------------------------------------------------------------------
def run(clip_counts=(8, 16), frames: int = 16, size: int = 64, batch_size: int = 64, workers: int = 2,
        weights: str = "none", precision: str = "float32", work_dir: str | None = None, log=print,
        engines=("local",), repeats: int = 3, modes=MODES) -> dict:
    """Each of `modes` on the largest clip count, ucfpipe's extraction (by each of `engines`, always measured)
    also on the others (memory must stay flat), each `repeats` times in interleaved rounds. The ratios and the
    ceiling are given where the modes they need ran."""
    from ucfpipe.core.errors import UcfpipeError

    # The generated dataset has 2 classes x 4 groups, so its clip count is a multiple of 8: checked before any
    # mode runs, so a count it cannot make is refused at once rather than after every measurement.
    if not clip_counts or any(count < 8 or count % 8 for count in clip_counts):
        raise UcfpipeError(f"--clips must be multiples of 8 (2 classes x 4 groups), got {','.join(map(str, clip_counts))}")
    if repeats < 1:
        raise UcfpipeError(f"--repeats must be at least 1, got {repeats}")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise UcfpipeError(f"--modes: no mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    peers = tuple(mode for mode in PEERS if mode in modes)
    settings = {"clip_counts": list(clip_counts), "frames": frames, "size": size, "batch_size": batch_size,
                "workers": workers, "weights": weights, "precision": precision, "engines": list(engines),
                "repeats": repeats, "modes": [mode for mode in MODES if mode == "extract" or mode in peers]}
    results: dict = {"settings": settings, "machine": machine(), "runs": []}
    extracts = tuple(ENGINE_MODES[engine] for engine in engines)
    largest = max(clip_counts)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        data = {count: bench_dataset(tmp / f"data{count}", count) for count in sorted(clip_counts)}
        for round_ in range(repeats):
            for count in sorted(clip_counts):
                common = {"videos": data[count]["videos"], "splits": data[count]["splits"], "frames": frames, "size": size,
                          "batch_size": batch_size, "workers": workers, "weights": weights, "precision": precision}
                for mode in _largest_order(extracts, peers) if count == largest else extracts:
                    out = tmp / f"{mode}{count}-{round_}"
                    log(f"bench: round {round_ + 1}/{repeats}: {mode} on {data[count]['num_clips']} clips ...")
                    result = _subprocess(mode, {**common, "out": str(out)})
                    result.update(mode=mode, clips=data[count]["num_clips"], round=round_ + 1,
                                  frames_per_second=result["frames"] / result["seconds"])
                    results["runs"].append(result)
                if count == largest and round_ == 0:
                    _compare(results, tmp, extracts, peers, count)
                for out in tmp.glob(f"*{count}-{round_}"):
                    shutil.rmtree(out, ignore_errors=True)  # a mode's next round starts from an empty cache
    return summarise(results)


def _largest_order(extracts: tuple, peers: tuple) -> list[str]:
    """The modes of the largest clip count in MODES' order, the engines' extractions where `extract` stands."""
    order = []
    for mode in MODES:
        if mode == "extract":
            order.extend(extracts)
        elif mode in peers:
            order.append(mode)
    return order


def _compare(results: dict, tmp: Path, extracts: tuple, peers: tuple, count: int) -> None:
    if "naive" in peers:  # ucfpipe and the peer must compute the same features
        results["max_feature_relative_error"] = compare_features(tmp / f"{extracts[0]}{count}-0", tmp / f"naive{count}-0")
    if len(extracts) > 1:  # the engines write the same cache: the same numbers
        results["max_engine_relative_error"] = max(
            compare_caches(tmp / f"{extracts[0]}{count}-0", tmp / f"{mode}{count}-0") for mode in extracts[1:])


def summarise(results: dict) -> dict:
    """Each (mode, clips)'s min/median/max over its rounds, the ratios of the largest count's medians, and the
    ceiling that applies on this machine."""
    groups: dict = {}
    for r in results["runs"]:
        groups.setdefault((r["mode"], r["clips"]), []).append(r)
    results["summary"] = [{"mode": mode, "clips": clips, "rounds": len(rows),
                           **_spread([r["frames_per_second"] for r in rows]),
                           "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rows)}
                          for (mode, clips), rows in groups.items()]
    largest = max(results["settings"]["clip_counts"])
    median = {row["mode"]: row["median"] for row in results["summary"] if row["clips"] == largest}
    extract = median[ENGINE_MODES[results["settings"]["engines"][0]]]
    cores = min(results["settings"]["workers"], os.cpu_count() or 1)  # decoding threads release the GIL
    if "model" in median:
        results["extract_vs_model"] = extract / median["model"]
    if "naive" in median:
        results["extract_vs_naive"] = extract / median["naive"]
    if "decode" in median:
        results["decode_frames_per_second_per_core"] = median["decode"] / cores
    if "host" in median:
        results["host_frames_per_second_per_core"] = median["host"] / cores
        if "decode" in median:
            results["host_vs_decode"] = median["host"] / median["decode"]
    if "model" in median and "decode" in median:
        accelerator = next((r.get("accelerator") for r in results["runs"] if r["mode"] == "model"), "")
        ceiling = min(median["model"], median["decode"]) if accelerator else 1 / (1 / median["model"] + 1 / median["decode"])
        results.update(extract_vs_ceiling=extract / ceiling, ceiling={
            "frames_per_second": ceiling, "accelerator": accelerator or None,
            "rule": f"the lower of model and decode ({accelerator})" if accelerator else
                    "1 / (1/model + 1/decode): on a CPU the model and decoding share the cores"})
    return results


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def machine() -> dict:
    """What the numbers were measured on: the CPU, its cores, and the libraries' versions."""
    from ucfpipe.core.provenance import versions

    model = platform.processor()
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "versions": versions()}


def format_table(results: dict) -> str:
    """Per mode the median frames/s with min and max over the rounds; the ratios and the ceiling."""
    settings = results["settings"]
    lines = [f"{settings['frames']} frames of {settings['size']}x{settings['size']} per clip, batch {settings['batch_size']}, "
             f"{settings['workers']} workers, {settings['repeats']} interleaved rounds; {results['machine']['cpu']} "
             f"({results['machine']['cores']} cores)",
             f"{'mode':<12}{'clips':>6}{'median frames/s':>17}{'min':>9}{'max':>9}{'peak RSS MiB':>14}"]
    for row in results["summary"]:
        lines.append(f"{row['mode']:<12}{row['clips']:>6}{row['median']:>17.1f}{row['min']:>9.1f}{row['max']:>9.1f}"
                     f"{row['peak_rss_mib']:>14.0f}")
    for r in results["runs"]:
        if "startup_seconds" in r:
            lines.append(f"{r['mode']} round {r['round']}: start-up {r['startup_seconds']:.1f} s, "
                         f"{r['after_startup_frames_per_second']:.1f} frames/s after it")
    # Each figure where the modes it needs ran (`--modes`); three lines of them, as before modes could be chosen.
    r = results
    figures = [
        {"ceiling": lambda: f"ceiling end to end: {r['ceiling']['frames_per_second']:.1f} frames/s ({r['ceiling']['rule']}); "
                            f"extract / ceiling: {r['extract_vs_ceiling']:.0%}",
         "extract_vs_model": lambda: f"extract / model-only: {r['extract_vs_model']:.0%}",
         "extract_vs_naive": lambda: f"extract / naive: {r['extract_vs_naive']:.2f}x (medians)"},
        {"host_frames_per_second_per_core": lambda: f"host (stage one with a zero model): "
            f"{r['host_frames_per_second_per_core']:.0f} frames/s per core (what this machine could feed an accelerator)",
         "decode_frames_per_second_per_core": lambda: f"decoding alone: {r['decode_frames_per_second_per_core']:.0f} "
                                                      "sampled frames/s per core"},
        {"max_feature_relative_error": lambda: f"max relative feature difference extract vs naive: "
                                               f"{r['max_feature_relative_error']:.1e}",
         "max_engine_relative_error": lambda: f"engines' features differ by at most {r['max_engine_relative_error']:.1e} "
                                              "(relative)"},
    ]
    for line in figures:
        parts = [describe() for key, describe in line.items() if key in r]
        if parts:
            lines.append("   ".join(parts))
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement in a fresh process: `python -m ucfpipe.bench.extract MODE JSON`
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    outcome = measure(sys.argv[1], json.loads(sys.argv[2]))
    outcome["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(outcome))
