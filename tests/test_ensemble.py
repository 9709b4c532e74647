"""Ensembles: `train --seeds/--cells` makes member runs plus ensemble.json; eval and predict take the mean
of the members' probabilities; members of different caches are refused."""

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from helpers import QUIET, tiny_config
from ucfpipe.cache.store import FeatureStore
from ucfpipe.cli import main
from ucfpipe.core.comma_list import comma_list
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json
from ucfpipe.serving import predictor as predict
from ucfpipe.stage_two import ensemble, evaluate, runs


@pytest.fixture(scope="module")
def trained_ensemble(synth_cache, synth_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensembles") / "ens"
    config = tiny_config(synth_cache, synth_dataset["splits"], out, epochs=2)
    summary = ensemble.train(config, [1, 2], ["lstm", "gru"], **QUIET)
    metrics = evaluate.run(out, tta=True, log=lambda *_: None)
    return out, summary, metrics


def member_probabilities(run_dir, store, video_ids):
    model = keras.saving.load_model(run_dir / runs.MODEL, safe_mode=True, compile=False)
    return np.asarray(model.predict(store.features(video_ids).astype(np.float32), verbose=0), np.float64)


def test_members_are_normal_runs_listed_in_ensemble_json(trained_ensemble):
    out, summary, _ = trained_ensemble
    names = ["member-lstm-seed1", "member-lstm-seed2", "member-gru-seed1", "member-gru-seed2"]
    record = json.loads((out / ensemble.ENSEMBLE).read_text())
    assert record["members"] == names and record["status"] == "finished" and summary["members"] == names
    for name in names:
        run = runs.Run(out / name)
        assert run.finished and (out / name / runs.MODEL).is_file()
        assert run.config.cell == name.split("-")[1] and run.config.seed == int(name[-1])
        assert run.fingerprint == record["fingerprint"]


def test_ensemble_probabilities_are_the_mean_of_its_members(trained_ensemble, synth_cache):
    out, _, metrics = trained_ensemble
    store = FeatureStore(synth_cache)
    test_ids = json.loads((out / "member-lstm-seed1" / runs.CLIPS).read_text())["test"]
    members = [member_probabilities(out / name, store, test_ids) for name in metrics["ensemble"]["members"]]
    mean = np.mean(members, axis=0)
    labels = store.labels(test_ids)
    assert metrics["top1"] == pytest.approx(np.mean(mean.argmax(axis=1) == labels))
    with (out / runs.PREDICTIONS).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["video_id"] for r in rows] == test_ids
    np.testing.assert_allclose([float(r["probability"]) for r in rows], mean.max(axis=1), atol=6e-5)
    for name, probabilities in zip(metrics["ensemble"]["members"], members):
        assert metrics["members"][name]["top1"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == labels))
        assert "tta" in metrics["members"][name]
    saved = json.loads((out / runs.METRICS).read_text())
    assert saved["members"].keys() == metrics["members"].keys() and "tta" in saved
    for name in ("per_class.csv", "confusion.png"):
        assert (out / name).is_file()


def test_predict_with_an_ensemble_averages_its_members(trained_ensemble, synth_dataset):
    out, _, metrics = trained_ensemble
    clip = sorted(Path(synth_dataset["videos"]).rglob("*.avi"))[0]
    together = predict.Predictor(out).probabilities(clip)
    alone = [predict.Predictor(out / name).probabilities(clip) for name in metrics["ensemble"]["members"]]
    np.testing.assert_allclose(together, np.mean(alone, axis=0), rtol=1e-6, atol=1e-7)


def test_members_of_different_caches_are_refused(trained_ensemble, tmp_path):
    out, _, _ = trained_ensemble
    copy = tmp_path / "ens"
    shutil.copytree(out, copy)
    record = json.loads((copy / "member-gru-seed2" / runs.RUN).read_text())
    record["cache"]["fingerprint"] = "0" * 16
    write_json(copy / "member-gru-seed2" / runs.RUN, record)
    with pytest.raises(UcfpipeError, match="different fingerprints"):
        predict.Predictor(copy)
    with pytest.raises(UcfpipeError, match="different fingerprints"):
        evaluate.run(copy, log=lambda *_: None)


def test_an_ensemble_needs_two_members_and_a_clean_directory(synth_cache, synth_dataset, tmp_path):
    config = tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "one")
    with pytest.raises(UcfpipeError, match="at least two members"):
        ensemble.train(config, [1], [], **QUIET)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(UcfpipeError, match="other files"):
        ensemble.train(tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "busy"), [1, 2], [], **QUIET)
    with pytest.raises(UcfpipeError, match="comma-separated"):
        comma_list("1,x", "--seeds", int)


@pytest.mark.slow
def test_cli_trains_evaluates_and_reports_an_ensemble(synth_cache, synth_dataset, tmp_path):
    out = tmp_path / "ens"
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--features", str(synth_cache), "--splits", str(synth_dataset["splits"]),
                                  "--out", str(out), "--seeds", "1,2", "--units", "8", "--epochs", "1",
                                  "--batch-size", "8", "--val-groups", "1"])
    assert result.exit_code == 0, result.output
    assert "member 2/2 member-lstm-seed2" in result.output
    result = runner.invoke(main, ["eval", "--run", str(out)])
    assert result.exit_code == 0, result.output
    assert "member member-lstm-seed1" in result.output and "top-1 accuracy" in result.output
    result = runner.invoke(main, ["report", str(out)])
    assert result.exit_code == 0, result.output
