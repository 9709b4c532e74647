"""Benchmark of windowed prediction on long videos: peak memory must not grow with the video's length.

Generates videos of the given lengths once (small frames, synthetic clips of several classes back to back,
reused by later runs), then classifies each with `predict --window` in its own process, so each peak
resident memory (VmHWM) is that length's own. Reports decoded frames per second of the windowed pass (model
loading excluded) and the peak memory before and after the pass.

    python -m ucfpipe.bench.long VIDEO RUN_DIR     (the child: prints one JSON line)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ucfpipe.bench.memory import memory_mib
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import replacing


def make_video(path: Path, minutes: float, size: int, fps: float) -> Path:
    """A `minutes`-long video of size x size frames cycling through synthetic clips of six classes; kept
    when already there (written to a temporary name, then renamed)."""
    import cv2

    from ucfpipe.datasets.synth import render_clip, video_fourcc

    if path.is_file():
        return path
    clips = [render_clip(label, 1, 1, frame_size=(size, size), seed=11) for label in range(6)]
    total = round(minutes * 60 * fps)
    with replacing(path, keep_suffix=True, durable=False) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*video_fourcc()), fps, (size, size))
        try:
            written, k = 0, 0
            while written < total:
                for frame in clips[k % len(clips)][:total - written]:
                    writer.write(frame)
                    written += 1
                k += 1
        finally:
            writer.release()
    return path


def measure(video: str, run_dir: str) -> dict:
    """The child: load the run, classify every window of `video`, report speed and memory."""
    from ucfpipe.serving.featuriser import StreamingFeaturiser, run_rate
    from ucfpipe.serving.predictor import Predictor
    from ucfpipe.serving.windows import predict_video

    predictor = Predictor(run_dir)
    rate = run_rate(predictor)
    featuriser = StreamingFeaturiser(predictor)
    loaded = memory_mib()
    started = time.perf_counter()
    prediction = predict_video(featuriser, video, rate, rate.clip_seconds / 2)
    seconds = time.perf_counter() - started
    peak = memory_mib()
    frames = prediction.num_frames
    return {"video": video, "duration_s": prediction.duration, "frames": frames, "windows": len(prediction.windows),
            "sampled_frames": featuriser.frames_featurised, "seconds": seconds, "frames_per_s": frames / seconds,
            "rss_loaded_mib": loaded["VmRSS"], "peak_loaded_mib": loaded["VmHWM"], "peak_rss_mib": peak["VmHWM"],
            "peak_cached_features": prediction.peak_cached}


def run(run_dir: str, minutes=(1, 10, 30), size: int = 64, fps: float = 25.0, directory: str = "bench-long",
        log=print) -> list[dict]:
    from ucfpipe.stage_two.runs import Run

    Run(run_dir).require_finished()  # fail at once, before minutes of video writing
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for length in minutes:
        video = folder / f"long-{length:g}min-{size}px-{fps:g}fps.avi"
        if not video.is_file():
            log(f"writing {video} ({length:g} min, {size}x{size}, {fps:g} fps) ...")
        make_video(video, length, size, fps)
        done = subprocess.run([sys.executable, "-m", "ucfpipe.bench.long", str(video), str(run_dir)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise UcfpipeError(f"windowed prediction of {video} failed: {done.stderr.strip().splitlines()[-1:]}")
        result = {"minutes": length, **json.loads(done.stdout.strip().splitlines()[-1])}
        log(f"{length:g} min: {result['frames']} frames, {result['windows']} windows, {result['frames_per_s']:.0f} frames/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB")
        results.append(result)
    return results


def format_table(results: list[dict]) -> str:
    lines = ["| video | frames | windows | sampled frames | pass s | frames/s | peak RSS after loading MiB | peak RSS MiB | features held (peak) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['minutes']:g} min | {r['frames']} | {r['windows']} | {r['sampled_frames']} | {r['seconds']:.1f} | "
                     f"{r['frames_per_s']:.0f} | {r['peak_loaded_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_cached_features']} |")
    peaks = [r["peak_rss_mib"] for r in results]
    if len(peaks) > 1:
        lines.append(f"\npeak RSS spread over the lengths: {max(peaks) - min(peaks):.0f} MiB ({np.ptp(peaks) / min(peaks):.1%})")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
