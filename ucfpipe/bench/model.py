"""`ucfpipe bench-model`: the backbones alone, side by side, by compute precision and batch size, and what
precision does to the features.

Throughput: uint8 frames of the extraction's shape through `predict_on_batch` (transfer to the device and
back included, as in extraction), one warm-up batch per shape so compilation is not counted, then the
settings are timed in interleaved rounds (the median is reported): a shared, noisy machine slows all of
them alike rather than whichever happened to run last.

Precision: the same frames, sampled from real clips, through the same weights at each precision; each
frame's feature vector is compared with float32's by relative L2 error (what the features of a cache made
with `--precision` differ by), beside the error float16 storage alone adds.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import backbones as table


def sample_frames(videos: str | None, num_frames: int, size: int, work_dir: str | None = None) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 RGB frames, about 4 from each of clips spread over `videos`
    (<Class>/*.avi); with no `videos`, from generated clips of UCF-101's frame size."""
    from ucfpipe.video.decode import read_clip

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        if videos is None:
            from ucfpipe.bench.extract import bench_dataset

            videos = bench_dataset(Path(tmp), 8)["videos"]
        paths = sorted(Path(videos).glob("*/*.avi"))
        if not paths:
            raise UcfpipeError(f"no <Class>/*.avi clips under {videos}; pass --videos the UCF-101/ folder")
        # A few frames from each of a few clips spread over the (class-sorted) list: all of UCF-101 is not decoded.
        paths = [paths[i] for i in np.unique(np.linspace(0, len(paths) - 1, max(1, num_frames // 4)).astype(int))]
        per_clip = -(-num_frames // len(paths))
        frames = np.concatenate([read_clip(path, per_clip, size).frames for path in paths])
    return frames[np.linspace(0, len(frames) - 1, num_frames).astype(int)]


def relative_errors(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-frame ||features - reference|| / ||reference||, in float64."""
    features, reference = features.astype(np.float64), reference.astype(np.float64)
    return np.linalg.norm(features - reference, axis=1) / np.maximum(np.linalg.norm(reference, axis=1), 1e-30)


def _features(model, frames: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.asarray(model.predict_on_batch(frames[i : i + batch_size]), np.float32)
                           for i in range(0, len(frames), batch_size)])


def _time(model, batch: np.ndarray, min_seconds: float) -> float:
    """Frames/s of `model` on `batch`, repeated for at least `min_seconds` (and 2 calls)."""
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < min_seconds:
        np.asarray(model.predict_on_batch(batch))  # to host: the call is finished, as extraction needs it
        calls += 1
    return calls * len(batch) / (time.perf_counter() - start)


def check_sizes(backbones, size: int | None) -> dict[str, int]:
    """Each backbone's frame size (`size`, or None: its native size), every one too small for its backbone named
    in one line; the table alone, no Keras."""
    sizes = {b: size or table.get(b).native_size for b in backbones}
    small = [b for b in backbones if sizes[b] < table.get(b).min_size]
    if small:
        least = ", ".join(f"{b} ({table.get(b).min_size})" for b in small)
        raise UcfpipeError(f"--size {size} is below the smallest input of {least}; pass a larger --size, or leave it "
                           "out for each backbone's native size, or leave those backbones out")
    return sizes


def run(batch_sizes=(32, 64), precisions=("float32", "bfloat16"), size: int | None = 224, weights: str = "none",
        videos: str | None = None, effect_frames: int = 64, rounds: int = 3, min_seconds: float = 2.0,
        work_dir: str | None = None, log=print, backbones=(table.DEFAULT,)) -> dict:
    """Each backbone at its default layer and pooling, at `size` (None: each backbone's native size)."""
    if "float32" not in precisions:
        precisions = ("float32", *precisions)  # the reference of the precision comparison
    sizes = check_sizes(backbones, size)
    import keras  # only now: a wrong setting above is refused in a moment, not after Keras has loaded

    from ucfpipe.models.extractor import build_extractor

    # First: a wrong --videos fails before any model is built.
    frames = {s: sample_frames(videos, effect_frames, s, work_dir) for s in sorted(set(sizes.values()))}
    # Same weights at every precision: seed 0.
    models = {(b, p): build_extractor(weights, "", "", sizes[b], p, 0, b) for b in backbones for p in precisions}
    results: dict = {"settings": {"backbones": list(backbones), "batch_sizes": list(batch_sizes),
                                  "precisions": list(precisions), "size": size, "weights": weights, "videos": videos,
                                  "effect_frames": effect_frames, "rounds": rounds, "backend": keras.backend.backend(),
                                  "keras": keras.__version__, "devices": keras.distribution.list_devices()}}
    log(f"{', '.join(backbones)} at their default layers, pooled, on {keras.backend.backend()} "
        f"({', '.join(results['settings']['devices'])})")

    results["backbones"], results["precision_effect"], results["storage_float16"] = {}, {}, {}
    for backbone in backbones:
        reference = _features(models[(backbone, "float32")], frames[sizes[backbone]], max(batch_sizes))
        results["backbones"][backbone] = {"size": sizes[backbone], "feature_size": int(reference.shape[-1])}
        stored = relative_errors(reference.astype(np.float16), reference)
        results["storage_float16"][backbone] = {"median": float(np.median(stored)), "max": float(stored.max())}
        results["precision_effect"][backbone] = {}
        for precision in precisions:
            errors = relative_errors(_features(models[(backbone, precision)], frames[sizes[backbone]], max(batch_sizes)),
                                     reference)
            results["precision_effect"][backbone][precision] = {"median": float(np.median(errors)),
                                                                 "max": float(errors.max())}

    rng = np.random.default_rng(0)
    batches = {(s, b): rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8) for s in set(sizes.values()) for b in batch_sizes}
    settings = [(m, p, b) for m in backbones for p in precisions for b in batch_sizes]
    for backbone, precision, batch_size in settings:  # compile every shape before any timing
        models[(backbone, precision)].predict_on_batch(batches[(sizes[backbone], batch_size)])
    timings: dict = {s: [] for s in settings}
    for number in range(rounds):
        log(f"bench-model: round {number + 1} of {rounds}")
        for backbone, precision, batch_size in settings:
            timings[(backbone, precision, batch_size)].append(
                _time(models[(backbone, precision)], batches[(sizes[backbone], batch_size)], min_seconds))
    results["throughput"] = [{"backbone": m, "precision": p, "batch_size": b, "frames_per_second": statistics.median(t),
                              "rounds": t} for (m, p, b), t in timings.items()]
    return results


def format_table(results: dict) -> str:
    fps = {(r["backbone"], r["precision"], r["batch_size"]): r["frames_per_second"] for r in results["throughput"]}
    width = max(len("backbone"), *(len(b) for b in results["backbones"]))
    lines = [f"{'backbone':<{width}}{'size':>6}{'features':>10}  {'precision':<10}{'batch':>6}{'frames/s':>11}{'vs float32':>12}"]
    for (backbone, precision, batch_size), value in fps.items():
        info = results["backbones"][backbone]
        lines.append(f"{backbone:<{width}}{info['size']:>6}{info['feature_size']:>10}  {precision:<10}{batch_size:>6}"
                     f"{value:>11.1f}{value / fps[(backbone, 'float32', batch_size)]:>11.2f}x")
    for backbone in results["backbones"]:
        best = max((k for k in fps if k[0] == backbone), key=fps.get)
        lines.append(f"fastest {backbone}: {best[1]} at batch {best[2]}, {fps[best]:.1f} frames/s")
    lines.append(f"features vs float32 compute, relative L2 per frame over {results['settings']['effect_frames']} "
                 f"frames (median / max):")
    for backbone, effects in results["precision_effect"].items():
        for precision, error in effects.items():
            lines.append(f"  {backbone:<{width}}  {precision:<10}{error['median']:.1e} / {error['max']:.1e}")
        storage = results["storage_float16"][backbone]
        lines.append(f"  {backbone:<{width}}  float16 storage of float32 features alone: "
                     f"{storage['median']:.1e} / {storage['max']:.1e}")
    return "\n".join(lines)
