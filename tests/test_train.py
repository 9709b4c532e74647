"""Training: group-held-out validation, the run directory, reproducibility, resume, and refusals."""

import csv
import json
import shutil

import keras
import numpy as np
import pytest

from helpers import QUIET, copy_cache, interrupt_training_after, tiny_config, weights_of, without_timings
from ucfpipe.cache.store import FeatureStore
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json
from ucfpipe.datasets.base import hold_out_groups
from ucfpipe.datasets.ucf101 import read_split
from ucfpipe.stage_two import clip_plan, run_setup, runs, train


@pytest.fixture(scope="module")
def reference_run(tiny_training):
    return tiny_training






# -- validation groups ---------------------------------------------------------------------------------------
def test_validation_holds_out_whole_training_groups_and_never_test_ones(synth_cache, synth_dataset):
    store = FeatureStore(synth_cache)
    split = read_split(synth_dataset["splits"], 1)
    for seed in range(5):
        plan = clip_plan.plan_clips(split, store, tiny_config(synth_cache, synth_dataset["splits"], "-", seed=seed))
        train_groups, val_groups = {c.group for c in plan.train}, {c.group for c in plan.val}
        assert val_groups == set(plan.val_groups) and len(val_groups) == 1
        assert not train_groups & val_groups
        assert (train_groups | val_groups) == split.groups("train")
        assert not (train_groups | val_groups) & split.groups("test")
        assert {c.video_id for c in plan.test} == {c.video_id for c in split.test}


def test_validation_groups_follow_the_seed_alone():
    groups = range(8, 26)  # UCF-101 split 1 trains on g08-g25
    assert hold_out_groups(groups, 3, seed=0) == hold_out_groups(list(reversed(groups)), 3, seed=0)
    assert len({tuple(hold_out_groups(groups, 3, seed)) for seed in range(10)}) > 1
    with pytest.raises(UcfpipeError, match="lower --val-groups to at most 17"):
        hold_out_groups(groups, 18, seed=0)


# -- the run directory ---------------------------------------------------------------------------------------
def test_a_run_directory_holds_model_settings_provenance_and_history(reference_run, synth_cache, synth_dataset):
    out, summary = reference_run
    for name in (runs.MODEL, runs.CONFIG, runs.RUN, runs.CLIPS, runs.HISTORY, runs.CURVES):
        assert (out / name).is_file(), name
    assert not (out / runs.CHECKPOINTS).exists()  # only an unfinished run keeps its resume checkpoint
    record = json.loads((out / runs.RUN).read_text())
    store = FeatureStore(synth_cache)
    assert record["status"] == "finished"
    assert record["cache"]["fingerprint"] == store.fingerprint and record["cache"]["settings"] == store.settings
    assert record["cache"]["extract_config"] == store.config
    assert record["classes"] == synth_dataset["classes"] and record["split"] == 1
    assert record["versions"]["keras"] == keras.__version__
    assert record["best"]["epoch"] == summary["best_epoch"]
    assert json.loads((out / runs.CONFIG).read_text())["seed"] == 0
    clips = json.loads((out / runs.CLIPS).read_text())
    assert len(clips["train"]) + len(clips["val"]) == len(read_split(synth_dataset["splits"], 1).train)
    rows = list(csv.DictReader((out / runs.HISTORY).open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= rows[0].keys()


def test_training_never_reads_test_features(synth_cache, synth_dataset, tmp_path, monkeypatch):
    read = set()
    original = FeatureStore.features

    def recording(self, video_ids, view=0):
        read.update(video_ids)
        return original(self, video_ids, view)

    monkeypatch.setattr(FeatureStore, "features", recording)
    train.run(tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "run", epochs=1), **QUIET)
    test_ids = {c.video_id for c in read_split(synth_dataset["splits"], 1).test}
    assert read and not read & test_ids


def test_same_seed_same_history_and_weights(reference_run, synth_cache, synth_dataset, tmp_path):
    out, summary = reference_run
    again = train.run(tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "again"), **QUIET)
    assert without_timings(again["history"]) == without_timings(summary["history"])
    for a, b in zip(weights_of(out), weights_of(tmp_path / "again")):
        np.testing.assert_array_equal(a, b)


def test_features_streamed_from_the_cache_train_exactly_as_in_memory(reference_run, synth_cache, synth_dataset, tmp_path):
    out, summary = reference_run
    streamed = train.run(tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "streamed", memory_limit_gb=1e-9), **QUIET)
    assert not json.loads((tmp_path / "streamed" / runs.RUN).read_text())["data"]["in_memory"]
    assert json.loads((out / runs.RUN).read_text())["data"]["in_memory"]
    assert without_timings(streamed["history"]) == without_timings(summary["history"])


def test_resume_continues_an_interrupted_run_to_the_same_result(reference_run, synth_cache, synth_dataset, tmp_path, monkeypatch):
    out, summary = reference_run
    config = tiny_config(synth_cache, synth_dataset["splits"], tmp_path / "run")
    interrupt_training_after(monkeypatch, 1)
    with pytest.raises(train.TrainingInterrupted, match="after epoch 2.*--resume") as caught:
        train.run(config, **QUIET)
    assert caught.value.exit_code == 130
    assert (tmp_path / "run" / runs.CHECKPOINTS / runs.STATE).is_file()
    with pytest.raises(UcfpipeError, match="unfinished training run"):
        runs.Run(tmp_path / "run").require_finished()

    monkeypatch.undo()
    resumed = train.run(run_setup.resume_config(tmp_path / "run"), resume=True, **QUIET)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    assert without_timings(resumed["history"]) == without_timings(summary["history"])
    for a, b in zip(weights_of(out), weights_of(tmp_path / "run")):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_a_finished_run_and_changed_settings(reference_run, tmp_path):
    out, _ = reference_run
    with pytest.raises(UcfpipeError, match="finished run.*nothing to resume"):
        run_setup.resume_config(out)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out, unfinished)
    record = json.loads((unfinished / runs.RUN).read_text())
    write_json(unfinished / runs.RUN, {**record, "status": "running"})
    with pytest.raises(UcfpipeError, match="drop --units"):
        run_setup.resume_config(unfinished, {"units": 64})
    assert run_setup.resume_config(unfinished, {"epochs": 9}).epochs == 9


# -- refusals ------------------------------------------------------------------------------------------------
def test_a_cache_missing_test_clips_is_refused_with_counts_unless_allowed(synth_cache, synth_dataset, tmp_path):
    split = read_split(synth_dataset["splits"], 1)
    dropped = {c.video_id for c in split.test[:4]}
    partial = copy_cache(synth_cache, tmp_path / "partial", drop=dropped)
    with pytest.raises(UcfpipeError, match=r"4 of 36 test clips and 0 of 72 train clips are not in the feature cache.*--allow-missing"):
        train.run(tiny_config(partial, synth_dataset["splits"], tmp_path / "refused"), **QUIET)
    assert not (tmp_path / "refused").exists()

    train.run(tiny_config(partial, synth_dataset["splits"], tmp_path / "allowed", epochs=1, allow_missing=True), **QUIET)
    record = json.loads((tmp_path / "allowed" / runs.RUN).read_text())
    assert record["data"]["allow_missing"] and sorted(record["data"]["missing_test"]) == sorted(dropped)
    assert record["data"]["num_test"] == 32


def test_a_cache_labelled_by_another_class_index_is_refused(synth_cache, synth_dataset, tmp_path):
    splits = tmp_path / "lists"
    shutil.copytree(synth_dataset["splits"], splits)
    classes = synth_dataset["classes"]
    swapped = [classes[1], classes[0], *classes[2:]]
    (splits / "classInd.txt").write_text("".join(f"{i} {name}\r\n" for i, name in enumerate(swapped, 1)))
    for path in splits.glob("trainlist*.txt"):  # keep the lists consistent with the new index
        lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(f"{clip} {swapped.index(clip.split('/')[0]) + 1}\r\n" for clip, _ in lines))
    with pytest.raises(UcfpipeError, match="other labels in the cache than in classInd.txt"):
        train.run(tiny_config(synth_cache, splits, tmp_path / "run"), **QUIET)


def test_an_existing_run_directory_is_not_overwritten(reference_run, synth_cache, synth_dataset):
    out, _ = reference_run
    with pytest.raises(UcfpipeError, match="already holds a training run"):
        train.run(tiny_config(synth_cache, synth_dataset["splits"], out), **QUIET)
