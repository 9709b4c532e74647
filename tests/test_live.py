"""Long videos (predict --window) and live streams: one streaming featuriser, windows laid out in frames,
each sampled frame through the CNN once, segments where the classes change, sources that end, drop or stall."""

import copy
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import QUIET, invoke, tiny_config
from ucfpipe.cache.store import FeatureStore
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets.synth import DEFAULT_CLASSES, render_clip, video_fourcc
from ucfpipe.serving import live
from ucfpipe.serving import predictor as predict
from ucfpipe.serving import windows
from ucfpipe.serving.featuriser import Rate, StreamingFeaturiser, run_rate
from ucfpipe.stage_two import train
from ucfpipe.video.decode import resize_rgb

FPS = 25.0
# Classes the tiny model tells apart reliably, two time-reversed pairs among them: FadingIn/FadingOut and
# RedToBlue/BlueToRed differ only in the order of their frames.
BLOCKS = ("FadingIn", "RedToBlue", "FadingOut", "BlueToRed")
CLIPS_PER_BLOCK = 2


@pytest.fixture(scope="module")
def run_dir(synth_cache, synth_dataset, tmp_path_factory):
    """A tiny run trained long enough to be accurate on the synthetic classes (about 10 s)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    config = tiny_config(synth_cache, synth_dataset["splits"], out, epochs=30, units=32, monitor="val_loss", patience=30)
    train.run(config, **QUIET)
    return out


@pytest.fixture(scope="module")
def predictor(run_dir):
    return predict.Predictor(run_dir)


@pytest.fixture(scope="module")
def rate(predictor):
    return run_rate(predictor)


def write_video(path, frames, fps=FPS):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*video_fourcc()), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def concatenated(rate, tmp_path_factory):
    """Clips of the BLOCKS classes back to back, each exactly one window long, from groups split 1 tests on.
    Returns the video and the true change times in seconds."""
    frames_per_clip = round(rate.clip_seconds * FPS)
    frames = []
    changes = []
    for block, name in enumerate(BLOCKS):
        if block:
            changes.append(len(frames) / FPS)
        for clip in range(1, CLIPS_PER_BLOCK + 1):
            frames.extend(render_clip(DEFAULT_CLASSES.index(name), 1 + block % 2, clip, seed=7,
                                      min_frames=frames_per_clip, max_frames=frames_per_clip))
    return write_video(tmp_path_factory.mktemp("long") / "concatenated.avi", frames), changes


def decoded_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


# -- the run's rate ---------------------------------------------------------------------------------------------
def test_the_default_window_is_the_typical_clip_of_the_runs_cache(run_dir, rate, synth_cache, predictor):
    store = FeatureStore(synth_cache)
    durations = [store.clip(v).num_frames / store.clip(v).fps for v in store.video_ids]
    assert rate.clip_seconds == pytest.approx(np.median(durations)) and rate.steps == 8
    recorded = json.loads((run_dir / "run.json").read_text())["cache"]["typical_clip_seconds"]
    assert recorded == pytest.approx(rate.clip_seconds)


def test_a_run_without_the_record_reads_its_cache_or_asks_for_window(run_dir, tmp_path, rate):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    record = json.loads((old / "run.json").read_text())
    del record["cache"]["typical_clip_seconds"]  # recorded by runs trained before windows existed
    (old / "run.json").write_text(json.dumps(record))
    assert run_rate(predict.Predictor(old)).clip_seconds == pytest.approx(rate.clip_seconds)
    record["cache"]["directory"] = str(tmp_path / "moved-away")
    (old / "run.json").write_text(json.dumps(record))
    with pytest.raises(UcfpipeError, match="pass --window SECONDS"):
        run_rate(predict.Predictor(old))
    assert run_rate(predict.Predictor(old), 2.5).clip_seconds == 2.5


# -- long videos ----------------------------------------------------------------------------------------------
def test_segments_of_concatenated_classes_change_within_one_window_of_the_truth(predictor, rate, concatenated):
    video, changes = concatenated
    # Stride = window puts each window on one clip. With overlapping windows a window straddling two clips of
    # one class sees its change twice, which the order-only classes can read as the reversed class.
    [prediction] = windows.run([video], predictor, rate, stride=rate.clip_seconds)
    segments = prediction.segments()
    assert [name for _, _, name in segments] == list(BLOCKS)
    found = [start for start, _, _ in segments[1:]]
    assert np.all(np.abs(np.array(found) - np.array(changes)) <= rate.clip_seconds), (found, changes)
    assert segments[-1][1] == pytest.approx(prediction.duration)


def test_each_sampled_frame_goes_through_the_cnn_once_and_windows_classify_their_own_frames(predictor, rate, concatenated):
    video, _ = concatenated
    featuriser = StreamingFeaturiser(predictor)
    prediction = windows.predict_video(featuriser, video, rate, stride=rate.clip_seconds / 2)
    fps, _ = windows.video_fps(video)
    plan = windows.layout(rate, rate.clip_seconds / 2, fps)
    sampled = {int(i) for k in range(len(prediction.windows)) for i in plan.samples(k)}
    assert len(prediction.windows) > 2 * len(BLOCKS) and featuriser.frames_featurised == len(sampled)
    frames = decoded_frames(video)
    for k in (0, 1, len(prediction.windows) - 1):  # overlapping windows, evicted features included
        rgb = np.stack([resize_rgb(frames[i], predictor.stage_one.size) for i in plan.samples(k)])
        expected = predictor.classify(predictor.featurise(rgb)[None])[0]
        np.testing.assert_allclose(prediction.windows[k].probabilities, expected, atol=1e-5)
        assert prediction.windows[k].start == pytest.approx(plan.first_frame(k) / fps)


def test_an_ensembles_windows_average_its_members(predictor, rate, concatenated):
    video, _ = concatenated
    other = predictor.run.load_model()
    other.set_weights([w * 0.5 for w in other.get_weights()])  # a second, different member
    members = [predictor.classifiers[0], other]
    ensemble = copy.copy(predictor)
    per_member = []
    for classifiers in ([members[0]], [members[1]], members):
        ensemble.classifiers = classifiers
        [prediction] = windows.run([video], ensemble, rate, stride=rate.clip_seconds / 2)
        per_member.append(np.stack([w.probabilities for w in prediction.windows]))
    assert not np.allclose(per_member[0], per_member[1], atol=1e-3)
    np.testing.assert_allclose(per_member[2], (per_member[0] + per_member[1]) / 2, atol=1e-6)


def test_features_held_stay_flat_as_the_video_grows(predictor, rate, tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(50, 32, 32, 3), dtype=np.uint8)
    peaks = []
    for repeats in (4, 16):
        video = write_video(tmp_path / f"loop{repeats}.avi", np.concatenate([base] * repeats))
        prediction = windows.predict_video(StreamingFeaturiser(predictor), video, rate, stride=rate.clip_seconds / 2)
        peaks.append(prediction.peak_cached)
    assert peaks[0] == peaks[1] <= 2 * rate.steps


def test_a_video_shorter_than_a_window_is_one_window_sampled_like_predict(predictor, rate, synth_dataset):
    short = next(p for p in sorted(Path(synth_dataset["videos"]).rglob("*.avi"))
                 if cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT) < rate.clip_seconds * FPS)
    [prediction] = windows.run([short], predictor, rate, stride=rate.clip_seconds / 2)
    assert len(prediction.windows) == 1 and prediction.windows[0].start == 0
    np.testing.assert_allclose(prediction.windows[0].probabilities, predictor.probabilities(short), atol=1e-6)


def test_windowed_predict_prints_json_and_writes_csvs_and_a_timeline(run_dir, concatenated, tmp_path):
    video, _ = concatenated
    out = tmp_path / "out"
    result = invoke("predict", str(video), "--run", str(run_dir), "--window", "auto", "--top", "3",
                    "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["video"] == str(video) and len(entry["top"]) == 3
    first, second = entry["windows"][:2]
    assert set(first) == {"start", "end", "top"} and first["start"] == 0 and len(first["top"]) == 3
    assert second["start"] == pytest.approx((first["end"] - first["start"]) / 2, abs=0.05)  # stride: half the window
    assert len(entry["seconds"]) == int(np.ceil(entry["duration"])) and entry["segments"][0]["start"] == 0
    with open(out / "concatenated" / "windows.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(entry["windows"]) and rows[0]["class_1"] == first["top"][0]["class"]
    with open(out / "concatenated" / "seconds.csv") as handle:
        assert [r["class"] for r in csv.DictReader(handle)] == [s["class"] for s in entry["seconds"]]
    assert (out / "concatenated" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("flags, message", [
    (["--window", "0.2"], "fewer than the run's 8 steps; use --window 0.32 or longer"),
    (["--window", "1", "--stride", "2"], "--stride 2 s is longer than --window 1 s"),
    (["--window", "soon"], "--window must be a number of seconds or auto"),
])
def test_bad_windows_are_one_line_and_write_nothing(run_dir, concatenated, tmp_path, flags, message):
    video, _ = concatenated
    result = invoke("predict", str(video), "--run", str(run_dir), "--out", str(tmp_path / "out"), *flags)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- live ---------------------------------------------------------------------------------------------------
def clip_frames(name, clip=1):
    return render_clip(DEFAULT_CLASSES.index(name), 1, clip, seed=3)


def test_a_file_source_prints_json_lines_at_each_stride_writes_the_annotated_video_and_exits_0(run_dir, concatenated, tmp_path, rate):
    video, _ = concatenated
    annotated = tmp_path / "annotated.mp4"
    result = invoke("live", "--run", str(run_dir), "--source", str(video), "--json", "--top", "3",
                    "--stride", "0.5", "--out", str(annotated))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) > 10 and all(set(line) == {"time", "latency", "top"} and len(line["top"]) == 3 for line in lines)
    times = np.array([line["time"] for line in lines])
    assert times[0] >= (rate.steps - 1) * rate.sample_seconds - 1e-6  # the ring is full first
    grid = times[0] + 0.5 * np.arange(len(times))  # on the stride's grid: the first sample at or after each k x 0.5 s
    assert np.all(times >= grid - 1e-3) and np.all(times < grid + rate.sample_seconds + 1e-3)
    assert all(line["latency"] >= 0 for line in lines)
    assert "ended: end" in result.stderr
    assert len(decoded_frames(annotated)) == len(decoded_frames(video))
    assert [p.name for p in tmp_path.iterdir()] == ["annotated.mp4"]


def test_a_generator_source_is_classified_from_the_last_t_sampled_frames(predictor, rate):
    frames = np.concatenate([clip_frames("FadingIn"), clip_frames("RedToBlue")])
    source = [(i / FPS, frame) for i, frame in enumerate(frames)]
    emitted = []
    summary = live.run(StreamingFeaturiser(predictor), source, rate, stride=0.4, top=len(predictor.classes), emit=emitted.append)
    assert summary.ended == "end" and summary.frames == len(frames) and summary.predictions == len(emitted) > 3
    # Which frames the rate samples: the first, then the first at or after each sample_seconds step.
    sampled, next_time = [], 0.0
    for i in range(len(frames)):
        if i / FPS >= next_time - 1e-9:
            sampled.append(i)
            next_time += rate.sample_seconds
            while next_time <= i / FPS:
                next_time += rate.sample_seconds
    for prediction in emitted:
        newest = sampled.index(round(prediction.time * FPS))
        window = sampled[newest - rate.steps + 1:newest + 1]
        rgb = np.stack([resize_rgb(frames[i], predictor.stage_one.size) for i in window])
        expected = predictor.classify(predictor.featurise(rgb)[None])[0]
        got = dict(prediction.top)
        np.testing.assert_allclose([got[c] for c in predictor.classes], expected, atol=1e-5)


def test_a_file_source_runs_as_fast_as_it_decodes_unless_realtime(synth_dataset):
    video = sorted(Path(synth_dataset["videos"]).rglob("*.avi"))[0]
    for realtime in (False, True):
        started = time.perf_counter()
        times = [moment for moment, _ in live.open_source(str(video), realtime=realtime)]
        wall = time.perf_counter() - started
        assert times == [i / FPS for i in range(len(times))]
        assert (wall >= times[-1]) if realtime else (wall < times[-1] / 2)


def test_a_stalled_source_is_reported_and_stops_with_exit_4(run_dir, monkeypatch):
    frames = clip_frames("FadingOut")
    release = threading.Event()

    class Stalling:
        fps = FPS

        def __iter__(self):
            yield from ((i / FPS, frame) for i, frame in enumerate(frames))
            release.wait(30)  # a camera that stops sending without closing

    monkeypatch.setattr(live, "open_source", lambda spec, *settings: Stalling())
    started = time.perf_counter()
    result = invoke("live", "--run", str(run_dir), "--source", "0", "--stall", "0.5")
    release.set()
    assert result.exit_code == 4, result.output
    assert "no frame for 0.5 s: the source stalled" in result.stderr and f"live: {len(frames)} frames" in result.stderr
    assert time.perf_counter() - started < 20


def test_a_dropped_source_and_ctrl_c_end_with_a_summary(predictor, rate):
    frames = clip_frames("BlueToRed")

    def dropping():
        yield from ((i / FPS, frame) for i, frame in enumerate(frames[:20]))
        raise live.SourceDropped("the camera source '0' stopped giving frames")

    summary = live.run(StreamingFeaturiser(predictor), dropping(), rate, stride=0.5)
    assert summary.ended == "dropped" and summary.frames == 20 and "stopped giving frames" in summary.line()

    def interrupt(prediction):
        raise KeyboardInterrupt

    source = [(i / FPS, frame) for i, frame in enumerate(frames)]
    summary = live.run(StreamingFeaturiser(predictor), source, rate, stride=0.5, emit=interrupt)
    assert summary.ended == "interrupted" and summary.predictions == 1 and "Ctrl-C" in summary.line()


@pytest.mark.slow
def test_ctrl_c_stops_a_live_run_with_a_summary_and_exit_130(run_dir, concatenated, tmp_path, warm):
    video, _ = concatenated
    annotated = tmp_path / "annotated.avi"
    process = warm.start(["live", "--run", run_dir, "--source", video, "--realtime", "--json", "--out", annotated],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = json.loads(process.stdout.readline())  # running: a prediction came
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert first["time"] > 0 and "ended: interrupted (Ctrl-C)" in stderr
    assert 0 < len(decoded_frames(annotated)) < len(decoded_frames(video)) and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("source", ["missing.avi", "http://127.0.0.1:9/stream.mp4", "7"])
def test_a_source_that_cannot_be_opened_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, source):
    annotated = tmp_path / "annotated.mp4"
    result = invoke("live", "--run", str(run_dir), "--source", str(tmp_path / source) if source.endswith(".avi") else source,
                    "--out", str(annotated))
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "cannot open" in result.stderr or "file not found" in result.stderr
    assert not list(tmp_path.iterdir())


def test_live_refuses_a_window_shorter_than_t_frames_of_the_source(run_dir, concatenated, tmp_path):
    video, _ = concatenated
    result = invoke("live", "--run", str(run_dir), "--source", str(video), "--window", "0.2",
                    "--out", str(tmp_path / "annotated.mp4"))
    assert result.exit_code == 2 and "fewer than the run's 8 steps" in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.skipif(not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), reason="this OpenCV has a GUI")
def test_display_without_gui_support_says_so(run_dir, concatenated, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    video, _ = concatenated
    result = invoke("live", "--run", str(run_dir), "--source", str(video), "--display")
    assert result.exit_code == 2 and "GUI support" in result.stderr


# -- live: the edges (issue 17) -------------------------------------------------------------------------------
def test_a_source_shorter_than_the_window_is_one_prediction_over_all_its_frames_like_predict(run_dir, predictor, rate, tmp_path):
    frames = clip_frames("RedToBlue")[:round(rate.clip_seconds * FPS) // 2]
    short = write_video(tmp_path / "short.avi", list(frames))
    result = invoke("live", "--run", str(run_dir), "--source", str(short), "--json",
                    "--top", str(len(predictor.classes)))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 1 and "1 predictions" in result.stderr and "ended: end" in result.stderr
    got = {entry["class"]: entry["probability"] for entry in lines[0]["top"]}
    np.testing.assert_allclose([got[c] for c in predictor.classes], predictor.probabilities(short), atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    (["--stride", "inf"], "--stride must be a number of seconds above 0 and at most 86400 (one day), got inf"),
    (["--stride", "1e300"], "--stride must be a number of seconds above 0 and at most 86400 (one day), got 1e+300"),
    (["--window", "1", "--stride", "2"], "--stride 2 s is longer than --window 1 s"),
    (["--stall", "inf"], "--stall must be a number of seconds above 0 and at most 86400"),
    (["--stall", "1e10"], "--stall must be a number of seconds above 0 and at most 86400"),
    (["--stall", "0"], "--stall must be"),
])
def test_live_refuses_out_of_range_strides_and_stalls_in_one_line(run_dir, concatenated, tmp_path, flags, message):
    video, _ = concatenated
    result = invoke("live", "--run", str(run_dir), "--source", str(video),
                    "--out", str(tmp_path / "annotated.mp4"), *flags)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_stall_and_stride_are_refused_before_anything_loads(tmp_path):
    for flags in (["--stall", "inf"], ["--stride", "inf"]):
        result = invoke("live", "--run", str(tmp_path / "no-run"), "--source", "0", *flags)
        assert result.exit_code == 2 and f"{flags[0]} must be" in result.stderr, result.output


def test_a_url_that_accepts_and_never_answers_gives_up_after_stall_seconds(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/stream.mp4"
        started = time.perf_counter()
        result = invoke("live", "--run", str(tmp_path / "run"), "--source", url, "--stall", "1")
        took = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(5)
        for connection in held:
            connection.close()
        server.close()
    assert held, "the server was never reached"
    assert took < 8, took  # FFmpeg's own limit is 30 s
    assert result.exit_code == 2 and "cannot open the url source" in result.stderr, result.output
    assert "no answer within --stall 1 s" in result.stderr


def test_a_file_url_plays_to_its_end_and_exits_0(run_dir, tmp_path):
    video = write_video(tmp_path / "a clip.avi", list(clip_frames("FadingIn")))
    result = invoke("live", "--run", str(run_dir), "--source", video.as_uri(), "--json")
    assert result.exit_code == 0, result.output
    assert "ended: end" in result.stderr and f"live: {len(clip_frames('FadingIn'))} frames" in result.stderr


@pytest.mark.parametrize("kind", ["directory", "empty"])
def test_a_directory_or_empty_source_says_what_it_is(tmp_path, kind):
    source = str(tmp_path) if kind == "directory" else ""
    result = invoke("live", "--run", str(tmp_path / "run"), "--source", source)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "file not found" not in result.stderr
    assert (f"--source {tmp_path} is a directory" if kind == "directory" else "--source is empty") in result.stderr


def noise_video(path, count=120, size=(320, 240)):
    """Frames that compress badly (about 20 KB each as mp4v), to fill a small disk quickly."""
    rng = np.random.default_rng(0)
    return write_video(path, [rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8) for _ in range(count)])


def test_a_full_disk_under_live_out_is_one_line_exit_2_and_no_file_then_a_rerun_writes_it_whole(run_dir, tmp_path, disk_of):
    video = noise_video(tmp_path / "noise.avi")
    small = disk_of("2m")
    annotated = small / "annotated.mp4"
    result = invoke("live", "--run", str(run_dir), "--source", str(video), "--out", str(annotated))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the disk is full" in lines[0] and str(annotated) in lines[0], lines
    assert not list(small.iterdir())  # neither a broken recording under the name nor a temporary
    roomy = disk_of("64m")
    result = invoke("live", "--run", str(run_dir), "--source", str(video), "--out", str(roomy / "annotated.mp4"))
    assert result.exit_code == 0 and f"wrote {roomy / 'annotated.mp4'}" in result.stderr, result.output
    assert len(decoded_frames(roomy / "annotated.mp4")) == 120 and [p.name for p in roomy.iterdir()] == ["annotated.mp4"]


def test_a_recording_the_disk_cut_short_is_caught_when_it_is_checked(tmp_path, disk_of, monkeypatch):
    """OpenCV's writer reports nothing: without the check after release, the broken file took the name."""
    monkeypatch.setattr(live.AnnotatedWriter, "SPACE_CHECK_SECONDS", float("inf"), raising=False)  # only the final check
    small = disk_of("2m")
    writer = live.AnnotatedWriter(small / "annotated.mp4", FPS)
    rng = np.random.default_rng(0)
    for _ in range(120):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), [("FadingIn", 0.9)])
    with pytest.raises(UcfpipeError, match="the disk is full"):
        writer.finish()
    assert not list(small.iterdir())


@pytest.mark.parametrize("when", ["loading", "first prediction", "a second later"])
@pytest.mark.slow
def test_sigterm_keeps_the_recording_whole_prints_the_summary_and_exits_143(run_dir, concatenated, tmp_path, when,
                                                                          warm):
    video, _ = concatenated
    annotated = tmp_path / "annotated.mp4"
    args = ["live", "--run", run_dir, "--source", video, "--realtime", "--json", "--out", annotated]
    if when == "loading":  # a fresh interpreter: the signal lands while it starts
        process = subprocess.Popen([sys.executable, "-m", "ucfpipe.cli", *map(str, args)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    else:  # started warm (tests/warm_process.py): the signal comes once predictions do
        process = warm.start(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if when == "loading":
            time.sleep(1.0)
        else:
            assert json.loads(process.stdout.readline())["time"] > 0  # running: a prediction came
            time.sleep(0 if when == "first prediction" else 1.0)
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    if when != "loading":
        assert "ended: interrupted (SIGTERM)" in stderr and f"wrote {annotated}" in stderr
        held = decoded_frames(annotated)
        assert 0 < len(held) < len(decoded_frames(video))
        assert int(cv2.VideoCapture(str(annotated)).get(cv2.CAP_PROP_FRAME_COUNT)) == len(held)
    assert [p.name for p in tmp_path.iterdir()] in ([], ["annotated.mp4"])  # no hidden temporary


class CountingFeaturiser:
    """A featuriser without a model: what `live.run` asks of one, for the loop's timing alone."""

    classes = ("a", "b")
    steps = 4

    def __init__(self):
        self.pushed = 0

    def warm_up(self):
        pass

    def prepare(self, image):
        return image

    def featurise(self, frames):
        return np.zeros((len(frames), 1))

    def push(self, feature):
        self.pushed += 1

    @property
    def ready(self):
        return self.pushed >= self.steps

    def classify_ring(self):
        return np.array([0.6, 0.4])

    classify = classify_ring


def test_live_predicts_on_the_strides_grid_without_drifting():
    """At 25 fps, sampling every 0.24 s and a stride of 1.01 s, a prediction lands at the first sample at or
    after each k x 1.01 s from the first: never a whole sample later than its grid time, so the mean interval
    is the stride (it was 1.2 s when each next time counted from the last prediction)."""
    rate = Rate(steps=4, clip_seconds=0.96)
    image = np.zeros((2, 2, 3), np.uint8)
    emitted = []
    live.run(CountingFeaturiser(), [(i / FPS, image) for i in range(int(60 * FPS))], rate, stride=1.01,
             emit=emitted.append)
    times = [p.time for p in emitted]
    for k, moment in enumerate(times):
        assert times[0] + k * 1.01 - 1e-9 <= moment < times[0] + k * 1.01 + rate.sample_seconds + 1e-9
    assert (times[-1] - times[0]) / (len(times) - 1) == pytest.approx(1.01, abs=0.01)


def test_live_takes_window_auto_as_predict_does(run_dir, concatenated):
    video, _ = concatenated
    said = [invoke("live", "--run", str(run_dir), "--source", str(video), "--json", *flags)
            for flags in ([], ["--window", "auto"])]
    assert [result.exit_code for result in said] == [0, 0], said[1].output
    lines = [[{k: v for k, v in json.loads(line).items() if k != "latency"} for line in result.stdout.splitlines()]
             for result in said]
    assert lines[0] == lines[1] and lines[0]
    refused = invoke("live", "--run", str(run_dir), "--source", str(video), "--window", "soon")
    assert refused.exit_code == 2 and "--window must be a number of seconds or auto, got 'soon'" in refused.output


def test_ctrl_c_while_the_run_loads_says_so_in_one_line_with_exit_130(run_dir, synth_dataset, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict.Predictor, "__init__", interrupted)
    video = sorted(Path(synth_dataset["videos"]).rglob("*.avi"))[0]
    result = invoke("live", "--run", str(run_dir), "--source", str(video))
    assert result.exit_code == 130, result.output
    assert result.output.strip() == "live: interrupted before the first frame"
