"""predict (and predict --window): settings that need no model are refused in one line before Keras loads;
seconds that are not finite or absurd are refused, never an OverflowError; what a refusal and a Ctrl-C leave."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import REPO, invoke
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.serving import predictor as predict
from ucfpipe.serving import windows
from ucfpipe.serving.featuriser import Rate

# Runs each argument list through the CLI in a fresh interpreter and reports, after each, whether a Keras backend
# was imported: the proof that a refusal came before the 10-30 s of loading it.
WITHOUT_KERAS = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from ucfpipe.cli import main

    BACKENDS = ("keras", "tensorflow", "jax", "torch")
    results = []
    for args in json.loads(sys.argv[1]):
        result = CliRunner().invoke(main, args)
        results.append({"exit_code": result.exit_code, "output": result.output,
                        "loaded": [name for name in BACKENDS if name in sys.modules]})
        if results[-1]["loaded"]:
            break  # the next cases get a fresh interpreter, so that each is judged on its own
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def video(synth_dataset):
    return sorted(Path(synth_dataset["videos"]).rglob("*.avi"))[0]


@pytest.fixture(scope="module")
def same_name(video, tmp_path_factory):
    """A copy of `video` of the same file name in another folder."""
    copy = tmp_path_factory.mktemp("elsewhere") / video.name
    copy.write_bytes(video.read_bytes())
    return copy


SECONDS = "must be a number of seconds above 0 and at most 86400 (one day), got"
REFUSALS = {
    # name: (extra arguments, what the one line says); every case also passes --run RUN and --out OUT
    "window inf": (["--window", "inf"], "--window " + SECONDS + " inf; pass e.g. --window auto"),
    "window 1e300": (["--window", "1e300"], "--window " + SECONDS + " 1e+300"),
    "window nan": (["--window", "nan"], "--window " + SECONDS + " nan"),
    "stride inf": (["--stride", "inf"], "--stride " + SECONDS + " inf"),
    "stride 1e300 with a window": (["--window", "1", "--stride", "1e300"], "--stride " + SECONDS),
    "stride 0": (["--stride", "0"], "--stride " + SECONDS + " 0; pass e.g. --stride 1"),
    "top 0": (["--window", "auto", "--top", "0"], "--top must be at least 1, got 0"),
    "stride longer than the window": (["--window", "1", "--stride", "2"], "--stride 2 s is longer than --window 1 s"),
    "stride longer than the auto window": (["--stride", "86400"], "s is longer than --window"),
    "window shorter than T frames": (["--window", "0.2"], "fewer than the run's 8 steps; use --window 0.32 or longer"),
    "missing video": (["{missing}"], "1 of 2 videos do not exist ({missing}); check the paths"),
    "two videos of one name": (["{same_name}"], "and {same_name} would both write"),
    "a file where a video's folder goes": (["--out", "{blocked}"], "is a file, where --out would write"),
}


@pytest.fixture(scope="module")
def refusals(run_dir, video, same_name, tmp_path_factory):
    """{case: (result, --out)} of REFUSALS, all in one fresh interpreter."""
    where = tmp_path_factory.mktemp("refusals")
    blocked = where / "blocked"
    blocked.mkdir()
    (blocked / video.stem).write_text("not a folder\n")
    names = {"missing": where / "no_such_video.avi", "same_name": same_name, "blocked": blocked}
    runs = []
    for n, (extra, _) in enumerate(REFUSALS.values()):
        out = where / f"out{n}"
        args = ["predict", str(video), "--run", str(run_dir), "--out", str(out)] + [a.format(**names) for a in extra]
        runs.append(args)
    results = []
    while len(results) < len(runs):
        completed = subprocess.run([sys.executable, "-c", WITHOUT_KERAS, json.dumps(runs[len(results):])], cwd=REPO,
                                   capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert completed.returncode == 0, completed.stderr
        results += json.loads(completed.stdout.splitlines()[-1])
    messages = {case: message.format(**names) for case, (_, message) in REFUSALS.items()}
    return {case: (result, where / f"out{n}", messages[case]) for n, (case, result) in enumerate(zip(REFUSALS, results))}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_setting_that_needs_no_model_is_refused_in_one_line_before_keras_loads(refusals, case):
    result, out, message = refusals[case]
    assert result["exit_code"] == 2, result["output"]
    assert message in result["output"] and len(result["output"].strip().splitlines()) == 1, result["output"]
    assert result["loaded"] == [], f"{case} was refused only after {result['loaded']} loaded"
    assert not out.exists()


def test_the_collision_error_names_both_videos(refusals, video, same_name):
    result, _, _ = refusals["two videos of one name"]
    assert str(video) in result["output"] and str(same_name) in result["output"]


@pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, 1e300, 86400.5, 0.0, -1.0])
def test_seconds_that_are_not_finite_or_over_a_day_are_refused(seconds):
    with pytest.raises(UcfpipeError, match="--stall must be a number of seconds above 0 and at most 86400"):
        windows.check_seconds(seconds, "--stall")


def test_seconds_up_to_a_day_are_accepted():
    assert windows.check_seconds(86400, "--window") == 86400.0 and windows.check_seconds(1e-3, "--window") == 1e-3


def test_an_infinite_window_from_python_is_refused_before_any_frame_is_laid_out(video):
    # No predictor is needed: the windows are checked against the videos before the model is touched.
    with pytest.raises(UcfpipeError, match="--window must be a number of seconds"):
        windows.run([video], None, Rate(8, math.inf), 1.0)
    with pytest.raises(UcfpipeError, match="--stride must be a number of seconds"):
        windows.run([video], None, Rate(8, 1.0), math.nan)


@pytest.mark.parametrize("windowed", [False, True])
def test_ctrl_c_says_a_rerun_starts_over(run_dir, video, tmp_path, monkeypatch, windowed):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(predict.Predictor, "__init__", interrupted)
    extra = ["--window", "auto", "--out", str(tmp_path / "out")] if windowed else []
    result = invoke("predict", str(video), "--run", str(run_dir), *extra)
    assert result.exit_code == 130, result.output
    assert "a rerun of the same command classifies every video again from the start" in result.output
    assert "continue" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_refused_weights_file_leaves_no_out_folder(run_dir, video, tmp_path):
    weights = tmp_path / "other.weights.h5"
    weights.write_bytes(b"not the weights the run's cache was made with")
    out = tmp_path / "out"
    result = invoke("predict", str(video), "--run", str(run_dir), "--window", "auto",
                    "--weights", str(weights), "--out", str(out))
    assert result.exit_code == 2 and "other features than the run was trained on" in result.output, result.output
    assert not out.exists()


def test_windows_csv_rows_match_its_header_when_top_exceeds_the_classes(tmp_path):
    import csv

    import numpy as np

    prediction = windows.WindowedPrediction("v.avi", classes=("a", "b", "c"), duration=4.0,
                                            windows=[windows.Window(0.0, 2.0, np.array([0.2, 0.5, 0.3])),
                                                     windows.Window(2.0, 4.0, np.array([0.6, 0.1, 0.3]))])
    windows.write_outputs(prediction, tmp_path, top=5)
    with open(tmp_path / "windows.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert len(header) == 2 + 2 * 3 and all(len(row) == len(header) for row in rows)
    assert "<th>top 3</th>" in (tmp_path / "report.html").read_text()


def test_predict_window_on_a_bad_file_says_its_error_once(run_dir, tmp_path):
    fake = tmp_path / "fake.avi"
    fake.write_text("this is not a video\n")
    result = invoke("predict", "--run", str(run_dir), "--window", "auto", str(fake))
    assert result.exit_code == 2, result.output
    assert result.output.count(str(fake)) == 1 and result.output.startswith("Error: "), result.output


def test_windowed_predict_reads_the_run_once_and_checks_the_windows_once(run_dir, video, tmp_path, monkeypatch):
    from ucfpipe.stage_two import ensemble

    calls = {"load_run_or_ensemble": 0, "check_window": 0}

    def counted(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counted(ensemble, "load_run_or_ensemble")
    counted(windows, "check_window")
    result = invoke("predict", str(video), "--run", str(run_dir), "--window", "auto", "--no-progress",
                    "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert calls == {"load_run_or_ensemble": 1, "check_window": 1}
    assert f"-> {tmp_path / 'out' / video.stem}/windows.csv, seconds.csv, timeline.png, report.html" in result.output


def test_no_progress_turns_the_windowed_progress_bar_off(monkeypatch):
    from ucfpipe.commands import options
    from ucfpipe.serving import predict_files

    seen = {}

    def run(videos, run_dir, **settings):
        seen.update(settings)
        return predict_files.Predictions([], 1.0)

    monkeypatch.setattr(predict_files, "run", run)
    monkeypatch.setattr(options, "stderr_is_terminal", lambda: True)
    for flags, progress in (([], True), (["--no-progress"], False)):  # a terminal shows the bar unless told not to
        result = invoke("predict", "v.avi", "--run", "r", "--window", "auto", *flags)
        assert result.exit_code == 0, result.output
        assert seen["progress"] is progress and seen["window"] == "auto"
