"""Predict: stage one rebuilt from the run's record reproduces the cached features; refusals are one line."""

from pathlib import Path

import numpy as np
import pytest

from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import ExtractConfig, fingerprint, to_dict
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.serving import predictor as predict
from ucfpipe.stage_one.extract import feature_settings
from ucfpipe.stage_two import runs


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return predict.Predictor(tiny_run)


def test_a_cached_clip_gets_the_features_and_probabilities_training_saw(predictor, synth_cache, synth_dataset):
    store = FeatureStore(synth_cache)
    video_id = store.video_ids[0]
    cached = store.features([video_id]).astype(np.float32)
    expected = predictor.classifier.predict(cached, verbose=0)[0]
    probabilities = predictor.probabilities(f"{synth_dataset['videos']}/{video_id}.avi")
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_top_classes_come_most_probable_first(predictor, genuine_videos):
    prediction = predictor.predict(genuine_videos / "Punch" / "v_Punch_g03_c01.avi", top=3)
    assert prediction.error is None and len(prediction.top) == 3
    probabilities = [p for _, p in prediction.top]
    assert probabilities == sorted(probabilities, reverse=True) and set(dict(prediction.top)) <= set(predictor.classes)


def test_an_unreadable_file_is_a_per_file_error(predictor, tmp_path):
    fake = tmp_path / "notes.avi"
    fake.write_text("not a video\n")
    prediction = predictor.predict(fake)
    assert prediction.top == [] and "OpenCV cannot open it" in prediction.error
    assert prediction.as_dict() == {"video": str(fake), "error": prediction.error}


class _Recorded(runs.Run):
    """A run that is only its record of the cache (what stage_one_config asks a run), with no directory to read."""

    def __init__(self, config: ExtractConfig):
        settings = feature_settings(config)
        self.directory = Path("no-such-run")
        self.record = {"cache": {"extract_config": to_dict(config), "settings": settings, "fingerprint": fingerprint(settings),
                                 "directory": "/features"}}


def test_a_run_answers_what_serving_reads_of_its_cache():
    run = _Recorded(ExtractConfig(videos="v", splits="s", weights="none"))
    assert run.cache_settings == run.record["cache"]["settings"] and run.cache_directory == "/features"
    assert run.typical_clip_seconds is None  # runs trained before train recorded it
    run.record["cache"]["typical_clip_seconds"] = 3
    assert run.typical_clip_seconds == 3.0 and isinstance(run.typical_clip_seconds, float)


def test_a_run_on_a_cache_of_an_older_format_still_predicts():
    run = _Recorded(ExtractConfig(videos="v", splits="s", weights="none"))
    settings = {**run.record["cache"]["settings"], "format": "ucfpipe-features/1"}  # what caches before checksums record
    run.record["cache"].update(settings=settings, fingerprint=fingerprint(settings))
    assert predict.stage_one_config(run).weights == "none"
    settings["frames"] = 7  # anything that changes the numbers is still refused
    run.record["cache"].update(settings=settings, fingerprint=fingerprint(settings))
    with pytest.raises(UcfpipeError, match="frames"):
        predict.stage_one_config(run)


def test_a_weights_file_that_changed_since_extraction_is_refused(tmp_path):
    weights = tmp_path / "vgg16.weights.h5"
    weights.write_bytes(b"the original weights")
    run = _Recorded(ExtractConfig(videos="v", splits="s", weights=str(weights)))
    assert predict.stage_one_config(run).weights == str(weights)
    weights.write_bytes(b"other weights")
    with pytest.raises(UcfpipeError, match="not the one the run's features were made with .*sha256"):
        predict.stage_one_config(run)
    moved = tmp_path / "moved.weights.h5"
    moved.write_bytes(b"the original weights")
    assert predict.stage_one_config(run, weights=str(moved)).weights == str(moved)


def test_other_stage_one_settings_than_recorded_are_refused():
    run = _Recorded(ExtractConfig(videos="v", splits="s", weights="none"))
    run.record["cache"]["settings"] = {**run.record["cache"]["settings"], "keras": "0.0"}
    run.record["cache"]["fingerprint"] = fingerprint(run.record["cache"]["settings"])
    with pytest.raises(UcfpipeError, match="keras: .* now vs 0.0 recorded"):
        predict.stage_one_config(run)
