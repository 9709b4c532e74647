"""Long videos (predict --window) and live streams: one streaming featuriser, windows laid out in frames,
each sampled frame through the CNN once, segments where the classes change, sources that end, drop or stall."""

import copy
import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from test_train import QUIET, tiny_config
from ucfpipe import live, predict, train, windows
from ucfpipe.cli import main
from ucfpipe.errors import UcfpipeError
from ucfpipe.features import FeatureStore
from ucfpipe.stream import StreamingFeaturiser, run_rate
from ucfpipe.synth import DEFAULT_CLASSES, render_clip, video_fourcc
from ucfpipe.video import resize_rgb

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
    result = CliRunner().invoke(main, ["predict", str(video), "--run", str(run_dir), "--window", "auto", "--top", "3",
                                       "--json", "--out", str(out)])
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
    result = CliRunner().invoke(main, ["predict", str(video), "--run", str(run_dir), "--out", str(tmp_path / "out"), *flags])
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- live ---------------------------------------------------------------------------------------------------
def clip_frames(name, clip=1):
    return render_clip(DEFAULT_CLASSES.index(name), 1, clip, seed=3)


def test_a_file_source_prints_json_lines_at_each_stride_writes_the_annotated_video_and_exits_0(run_dir, concatenated, tmp_path, rate):
    video, _ = concatenated
    annotated = tmp_path / "annotated.mp4"
    result = CliRunner().invoke(main, ["live", "--run", str(run_dir), "--source", str(video), "--json", "--top", "3",
                                       "--stride", "0.5", "--out", str(annotated)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) > 10 and all(set(line) == {"time", "latency", "top"} and len(line["top"]) == 3 for line in lines)
    times = np.array([line["time"] for line in lines])
    assert times[0] >= (rate.steps - 1) * rate.sample_seconds - 1e-6  # the ring is full first
    assert np.all(np.diff(times) >= 0.5 - 1e-6) and np.all(np.diff(times) < 0.5 + rate.sample_seconds + 1e-6)
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

    monkeypatch.setattr(live, "open_source", lambda spec, realtime=False: Stalling())
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["live", "--run", str(run_dir), "--source", "0", "--stall", "0.5"])
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


def test_ctrl_c_stops_a_live_run_with_a_summary_and_exit_130(run_dir, concatenated, tmp_path):
    video, _ = concatenated
    annotated = tmp_path / "annotated.avi"
    command = [sys.executable, "-m", "ucfpipe.cli", "live", "--run", str(run_dir), "--source", str(video), "--realtime",
               "--json", "--out", str(annotated)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = json.loads(process.stdout.readline())  # running: a prediction came
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert first["time"] > 0 and "ended: interrupted (Ctrl-C)" in stderr
    assert 0 < len(decoded_frames(annotated)) < len(decoded_frames(video)) and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("source", ["missing.avi", "http://127.0.0.1:9/stream.mp4", "7"])
def test_a_source_that_cannot_be_opened_is_one_line_exit_2_and_writes_nothing(run_dir, tmp_path, source):
    annotated = tmp_path / "annotated.mp4"
    result = CliRunner().invoke(main, ["live", "--run", str(run_dir), "--source", str(tmp_path / source) if source.endswith(".avi") else source,
                                       "--out", str(annotated)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "cannot open" in result.stderr or "file not found" in result.stderr
    assert not list(tmp_path.iterdir())


def test_live_refuses_a_window_shorter_than_t_frames_of_the_source(run_dir, concatenated, tmp_path):
    video, _ = concatenated
    result = CliRunner().invoke(main, ["live", "--run", str(run_dir), "--source", str(video), "--window", "0.2",
                                       "--out", str(tmp_path / "annotated.mp4")])
    assert result.exit_code == 2 and "fewer than the run's 8 steps" in result.stderr and not list(tmp_path.iterdir())


@pytest.mark.skipif(not re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), reason="this OpenCV has a GUI")
def test_display_without_gui_support_says_so(run_dir, concatenated, monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    video, _ = concatenated
    result = CliRunner().invoke(main, ["live", "--run", str(run_dir), "--source", str(video), "--display"])
    assert result.exit_code == 2 and "GUI support" in result.stderr
