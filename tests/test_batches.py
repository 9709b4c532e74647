"""Training augmentation (random stored view per clip and epoch, temporal jitter and step drop) and
test-time augmentation (`eval --tta`) on a cache that stores several views."""

import json

import keras
import numpy as np
import pytest

from helpers import QUIET, extract_tiny, interrupt_training_after, tiny_config, weights_of, without_timings
from ucfpipe.cache.store import FeatureStore
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.stage_two import evaluate, run_setup, runs, train
from ucfpipe.stage_two.batches import ClipBatches, InMemory, load_source, temporal_indices


# The tests of stored views need an extract of their own with four views (about 20 s on two cores, the largest
# fixture of the fast loop): `make test` runs them, `make test-fast` does not.
needs_views = pytest.mark.slow


@pytest.fixture(scope="module")
def views_cache(synth_dataset, tmp_path_factory):
    """The synthetic dataset at tiny size with the centre, flip and two time views."""
    return extract_tiny(synth_dataset, tmp_path_factory.mktemp("views") / "features", views="flip,time")


@pytest.fixture(scope="module")
def views_run(views_cache, synth_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("views-runs") / "reference"
    summary = train.run(tiny_config(views_cache, synth_dataset["splits"], out), **QUIET)
    return out, summary


# -- the pieces ----------------------------------------------------------------------------------------------
def test_temporal_indices_are_the_identity_when_off_and_local_when_on():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(temporal_indices(rng, 4, 8, 0.0, 0.0), np.tile(np.arange(8), (4, 1)))
    jittered = temporal_indices(np.random.default_rng(1), 500, 8, 0.3, 0.0)
    assert jittered.min() >= 0 and jittered.max() <= 7
    assert np.abs(jittered - np.arange(8)).max() == 1
    assert 0.15 < np.mean(jittered != np.arange(8)) < 0.35  # ~0.3, less at the clipped ends
    dropped = temporal_indices(np.random.default_rng(2), 500, 8, 0.0, 0.3)
    assert (dropped[:, 0] == 0).all() and (np.diff(dropped, axis=1) >= 0).all()
    repeated = np.diff(dropped, axis=1) == 0
    assert 0.2 < repeated.mean() < 0.4
    # a dropped step repeats the previous kept one: every index is either its own step or an earlier one
    assert (dropped <= np.arange(8)).all()


def test_each_pass_draws_a_view_per_clip_reproducibly_from_seed_and_pass():
    n, views, steps = 20, 3, 4
    features = np.stack([np.full((n, steps, 2), v, np.float16) for v in range(views)], axis=1)  # value = view
    features += np.arange(n, dtype=np.float16)[:, None, None, None] * 10  # and the clip
    source = InMemory(features, multiview=True)

    def one_pass(batches):
        return np.concatenate([batches[i][0] for i in range(len(batches))])

    batches = ClipBatches(source, np.zeros(n, int), 2, 8, shuffle_seed=5, random_views=True)
    first, second = one_pass(batches), one_pass(batches)
    seen_views = first[:, 0, 0] % 10
    assert set(seen_views) == {0, 1, 2}  # 20 clips: every view is drawn
    assert not np.array_equal(first, second)
    again = ClipBatches(source, np.zeros(n, int), 2, 8, shuffle_seed=5, random_views=True)
    np.testing.assert_array_equal(one_pass(again), first)
    resumed = ClipBatches(source, np.zeros(n, int), 2, 8, shuffle_seed=5, random_views=True, first_pass=1)
    np.testing.assert_array_equal(one_pass(resumed), second)
    # without random views the same order, the centre view only
    plain = ClipBatches(source, np.zeros(n, int), 2, 8, shuffle_seed=5)
    plain_pass = one_pass(plain)
    assert (plain_pass[:, 0, 0] % 10 == 0).all()
    np.testing.assert_array_equal(plain_pass[:, 0, 0] // 10, first[:, 0, 0] // 10)


def test_augmentation_without_a_seed_is_refused():
    with pytest.raises(ValueError, match="shuffle_seed"):
        ClipBatches(InMemory(np.zeros((4, 3, 2))), None, 0, 2, time_jitter=0.1)


@needs_views
def test_streamed_and_in_memory_multi_view_sources_agree(views_cache):
    store = FeatureStore(views_cache)
    ids = store.video_ids[:10]
    views = list(range(len(store.views)))
    memory, streamed = load_source(store, ids, True, views=views), load_source(store, ids, False, views=views)
    choice = np.arange(10) % len(views)
    rows = np.arange(10)[::-1]
    np.testing.assert_array_equal(memory.read(rows, choice), streamed.read(rows, choice))
    np.testing.assert_array_equal(memory.read(rows), store.features([ids[r] for r in rows], view=0))


# -- training ------------------------------------------------------------------------------------------------
@needs_views
def test_training_draws_from_every_stored_view_and_records_them(views_run, views_cache):
    out, _ = views_run
    record = json.loads((out / runs.RUN).read_text())
    assert record["data"]["train_views"] == FeatureStore(views_cache).views
    assert FeatureStore(views_cache).views[0] == "center" and len(record["data"]["train_views"]) > 1


@needs_views
def test_augmented_training_is_reproducible_streamed_or_in_memory(views_run, views_cache, synth_dataset, tmp_path):
    out, summary = views_run
    again = train.run(tiny_config(views_cache, synth_dataset["splits"], tmp_path / "again", memory_limit_gb=1e-9), **QUIET)
    assert without_timings(again["history"]) == without_timings(summary["history"])
    for a, b in zip(weights_of(out), weights_of(tmp_path / "again")):
        np.testing.assert_array_equal(a, b)


@needs_views
def test_augmentation_changes_training_and_center_only_switches_views_off(views_run, views_cache, synth_dataset, tmp_path):
    _, summary = views_run
    plain = train.run(tiny_config(views_cache, synth_dataset["splits"], tmp_path / "plain", train_views="center",
                                  time_jitter=0.0, step_drop=0.0), **QUIET)
    assert json.loads((tmp_path / "plain" / runs.RUN).read_text())["data"]["train_views"] == ["center"]
    assert without_timings(plain["history"]) != without_timings(summary["history"])


@needs_views
def test_resume_of_an_augmented_run_is_bit_exact(views_run, views_cache, synth_dataset, tmp_path, monkeypatch):
    out, summary = views_run
    interrupt_training_after(monkeypatch, 0)
    with pytest.raises(train.TrainingInterrupted):
        train.run(tiny_config(views_cache, synth_dataset["splits"], tmp_path / "run"), **QUIET)
    monkeypatch.undo()
    resumed = train.run(run_setup.resume_config(tmp_path / "run"), resume=True, **QUIET)
    assert without_timings(resumed["history"]) == without_timings(summary["history"])
    for a, b in zip(weights_of(out), weights_of(tmp_path / "run")):
        np.testing.assert_array_equal(a, b)


@needs_views
def test_bad_augmentation_settings_are_refused(views_cache, synth_dataset, tmp_path):
    with pytest.raises(UcfpipeError, match="--time-jitter must be in"):
        tiny_config(views_cache, synth_dataset["splits"], tmp_path / "x", time_jitter=1.5).validate()
    with pytest.raises(UcfpipeError, match="--train-views must be one of"):
        tiny_config(views_cache, synth_dataset["splits"], tmp_path / "x", train_views="flip").validate()


# -- test-time augmentation ----------------------------------------------------------------------------------
@needs_views
def test_tta_probabilities_are_the_mean_of_each_view_predicted_alone(views_run, views_cache):
    out, _ = views_run
    metrics = evaluate.run(out, tta=True, log=lambda *_: None)
    store = FeatureStore(views_cache)
    test_ids = json.loads((out / runs.CLIPS).read_text())["test"]
    model = keras.saving.load_model(out / runs.MODEL, safe_mode=True, compile=False)
    per_view = [np.asarray(model.predict(store.features(test_ids, view=v).astype(np.float32), verbose=0), np.float64)
                for v in range(len(store.views))]
    expected = np.mean(per_view, axis=0)
    found = evaluate.tta_probabilities(model, store, test_ids, 8, 4.0)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-6)
    labels = store.labels(test_ids)
    assert metrics["tta"]["views"] == store.views
    assert metrics["tta"]["top1"] == pytest.approx(np.mean(expected.argmax(axis=1) == labels))
    assert metrics["top1"] == pytest.approx(np.mean(per_view[0].argmax(axis=1) == labels))  # single view: the centre
    for key in ("top1", "top5", "mean_class_accuracy"):
        assert key in metrics["tta"] and key in metrics
    saved = json.loads((out / runs.METRICS).read_text())
    assert saved["tta"]["top1"] == metrics["tta"]["top1"]


@needs_views
def test_a_run_recorded_before_augmentation_existed_keeps_training_without_it(views_run, tmp_path):
    import shutil

    out, _ = views_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    config = json.loads((old / runs.CONFIG).read_text())
    for key in ("train_views", "time_jitter", "step_drop"):
        config.pop(key)
    (old / runs.CONFIG).write_text(json.dumps(config))
    loaded = runs.Run(old).config
    assert (loaded.train_views, loaded.time_jitter, loaded.step_drop) == ("center", 0.0, 0.0)
    assert runs.Run(out).config.train_views == "all"
