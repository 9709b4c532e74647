"""Stage one end to end on small inputs: features, the cache format, resume, and settings changes."""

import json
import shutil
import threading

import cv2
import h5py
import numpy as np
import pytest

from helpers import TINY, invoke
from ucfpipe.cache.store import FeatureStore
from ucfpipe.cache.writer import open_for_writing
from ucfpipe.config import ExtractConfig
from ucfpipe.core.errors import Interrupted, UcfpipeError
from ucfpipe.stage_one import extract, featurising

QUIET = {"progress": False, "log": lambda *_: None}


def relative_error(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A VGG16 weights file of our own, as a user would pass with --weights PATH."""
    import keras

    keras.utils.set_random_seed(123)
    path = tmp_path_factory.mktemp("weights") / "vgg16_notop.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3)).save_weights(path)
    return path


@pytest.fixture(scope="module")
def genuine_cache(tmp_path_factory, genuine_videos, official_splits, weights_file):
    out = tmp_path_factory.mktemp("genuine") / "features"
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(out), frames=6,
                           size=64, weights=str(weights_file), batch_size=16, allow_missing=True)
    summary = extract.run(config, **QUIET)
    assert summary["extracted"] == 6 and not summary["failed"]
    return out


def test_genuine_clips_match_an_independent_keras_computation(genuine_cache, genuine_videos, weights_file):
    """Decode every frame with OpenCV, keep the stored indices, preprocess the keras.applications way."""
    import keras

    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(64, 64, 3))
    vgg.load_weights(weights_file)
    conv = keras.Model(vgg.input, vgg.get_layer("block5_conv3").output)
    store = FeatureStore(genuine_cache)
    assert len(store) == 6
    for video_id in store.video_ids:
        clip = store.clip(video_id)
        capture = cv2.VideoCapture(str(genuine_videos / f"{video_id}.avi"))
        frames = []
        while (frame := capture.read()[1]) is not None:
            frames.append(frame)
        assert clip.num_frames == len(frames)
        rgb = np.stack([cv2.cvtColor(cv2.resize(frames[i], (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                        for i in clip.frame_indices[0]])
        expected = np.asarray(conv.predict_on_batch(keras.applications.vgg16.preprocess_input(rgb.astype("float32"))))
        expected = expected.mean(axis=(1, 2))
        assert clip.features.shape == (1, 6, 512) and clip.features.dtype == np.float16
        # float16 storage rounds at ~1e-4; a BGR/RGB mix-up or missing preprocessing is ~1e-2 or more.
        assert relative_error(clip.features[0], expected) < 2e-3


def test_store_records_labels_groups_and_provenance(genuine_cache, official_splits):
    store = FeatureStore(genuine_cache)
    clip = store.clip("PushUps/v_PushUps_g02_c03")
    assert (clip.label, clip.group, clip.num_frames) == (71, 2, 79)
    assert clip.fps == pytest.approx(25.0)
    assert clip.frame_indices.shape == (1, 6)
    assert store.settings["weights"] == "file" and len(store.settings["sha256"]) == 64
    assert store.config["size"] == 64 and store.views == ["center"]
    assert store.num_steps == 6 and store.feature_shape == (512,)
    assert len(store.report["missing"]) == 13320 - 6
    ids = ["Punch/v_Punch_g03_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01"]
    np.testing.assert_array_equal(store.features(ids)[1], store.clip(ids[1]).features[0])
    np.testing.assert_array_equal(store.labels(ids), [70, 0])
    with pytest.raises(UcfpipeError, match="not in the cache"):
        store.features(["Punch/v_Punch_g99_c01"])


def test_cache_is_readable_with_plain_h5py(genuine_cache):
    manifest = json.loads((genuine_cache / "manifest.json").read_text())
    with h5py.File(genuine_cache / manifest["shards"][0], "r") as shard:
        assert shard.attrs["fingerprint"] == manifest["fingerprint"]
        assert shard["features"].shape[1:] == (1, 6, 512)
        assert shard["video_id"].asstr()[0].count("/") == 1


def test_rerun_with_same_settings_does_nothing(genuine_cache, genuine_videos, official_splits, weights_file):
    before = sorted(p.name for p in genuine_cache.iterdir())
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(genuine_cache), frames=6,
                           size=64, weights=str(weights_file), batch_size=8, workers=1, allow_missing=True)
    summary = extract.run(config, **QUIET)  # batch size and workers do not change a feature
    assert summary["extracted"] == 0 and summary["cached"] == 6
    assert sorted(p.name for p in genuine_cache.iterdir()) == before


@pytest.mark.parametrize("change", [{"frames": 7}, {"size": 48}, {"pooling": "max"}, {"dtype": "float32"}, {"seed": 1}])
def test_changed_settings_never_reuse_or_mix_with_the_cache(synth_dataset, synth_cache, tmp_path, change):
    out = tmp_path / "features"
    shutil.copytree(synth_cache, out)
    settings = {**TINY, **change}
    config = ExtractConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out), **settings)
    with pytest.raises(UcfpipeError, match="holds features made with other settings") as caught:
        extract.run(config, **QUIET)
    assert list(change)[0] in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in synth_cache.iterdir())


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_cache(synth_dataset, synth_cache, tmp_path, monkeypatch):
    out = tmp_path / "features"
    config = ExtractConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out),
                           shard_clips=4, **{**TINY, "batch_size": 16})
    real_run, calls = featurising.Batcher.run, []

    def interrupted_after_a_few_batches(self):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real_run(self)

    monkeypatch.setattr(featurising.Batcher, "run", interrupted_after_a_few_batches)
    with pytest.raises(Interrupted, match="rerun the same command to resume"):
        extract.run(config, **QUIET)
    monkeypatch.setattr(featurising.Batcher, "run", real_run)
    with pytest.raises(UcfpipeError, match="incomplete"):
        FeatureStore(out)
    partial = len(list(out.glob("shard-*.h5")))
    assert partial >= 1
    summary = extract.run(config, **QUIET)
    assert 0 < summary["extracted"] < synth_dataset["num_clips"]
    resumed, clean = FeatureStore(out), FeatureStore(synth_cache)
    assert resumed.video_ids == clean.video_ids and resumed.fingerprint == clean.fingerprint
    np.testing.assert_allclose(resumed.features(resumed.video_ids).astype(np.float32),
                               clean.features(clean.video_ids).astype(np.float32), rtol=2e-3, atol=1e-4)


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    ready, release = threading.Event(), threading.Event()

    def first_writer():
        with open_for_writing(tmp_path, "abc", {"dtype": "float16"}):
            ready.set()
            release.wait(10)

    thread = threading.Thread(target=first_writer)
    thread.start()
    try:
        assert ready.wait(10)
        with pytest.raises(UcfpipeError, match=r"the feature cache .* is in use by pid \d+"):
            with open_for_writing(tmp_path, "abc", {"dtype": "float16"}):
                pass
    finally:
        release.set()
        thread.join()


def test_missing_clips_stop_extraction_unless_allowed(genuine_videos, official_splits, tmp_path):
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(tmp_path / "f"), **TINY)
    with pytest.raises(UcfpipeError, match="13314 of 13320 listed clips are missing .* pass --allow-missing"):
        extract.run(config, **QUIET)
    assert not (tmp_path / "f").exists()


@pytest.mark.slow  # a whole stage-one pipeline (extracts, then extracts again): make test
def test_unreadable_clip_is_recorded_and_the_rest_extracted(synth_dataset, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(synth_dataset["videos"], videos)
    broken = sorted(videos.glob("*/*.avi"))[3]
    broken.write_bytes(b"not a video")
    config = ExtractConfig(videos=str(videos), splits=str(synth_dataset["splits"]), out=str(tmp_path / "f"), **TINY)
    summary = extract.run(config, **QUIET)
    broken_id = f"{broken.parent.name}/{broken.stem}"
    assert list(summary["failed"]) == [broken_id]
    store = FeatureStore(tmp_path / "f")
    assert broken_id not in store and len(store) == synth_dataset["num_clips"] - 1
    assert "cannot open" in store.report["failed"][broken_id]


@pytest.mark.slow  # a whole stage-one pipeline (extracts, checks, re-extracts): make test
def test_shard_parts_are_disjoint_complete_and_merge_into_the_full_cache(synth_dataset, synth_cache, tmp_path):
    from ucfpipe.stage_one.merge import merge

    parts = []
    for index in range(3):
        out = tmp_path / f"part{index}"
        config = ExtractConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out),
                               shard=f"{index}/3", **TINY)
        assert extract.run(config, **QUIET)["extracted"] == synth_dataset["num_clips"] // 3
        parts.append(out)
    ids = [set(FeatureStore(p).video_ids) for p in parts]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    with pytest.raises(UcfpipeError, match=r"parts must be 0..2 of 3, each once: missing \[2\]"):
        merge(parts[:2], tmp_path / "merged")
    with pytest.raises(UcfpipeError, match=r"repeated \[0\]"):
        merge([parts[0], parts[0], parts[1]], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    summary = merge(parts, tmp_path / "merged")
    assert summary["clips"] == synth_dataset["num_clips"]
    merged, clean = FeatureStore(tmp_path / "merged"), FeatureStore(synth_cache)
    assert merged.video_ids == clean.video_ids and merged.fingerprint == clean.fingerprint
    np.testing.assert_allclose(merged.features(merged.video_ids).astype(np.float32),
                               clean.features(clean.video_ids).astype(np.float32), rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("shard", ["3/3", "1", "a/b", "-1/2"])
def test_bad_shard_specs_are_refused(shard):
    with pytest.raises(UcfpipeError, match="--shard must be i/N"):
        ExtractConfig(videos="v", splits="s", shard=shard).validate()


@pytest.fixture(scope="module")
def six_clips(tmp_path_factory):
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("six"), num_classes=2, num_groups=3, clips_per_group=1, seed=0)


def test_features_float16_cannot_hold_are_refused_in_one_line_naming_float32(six_clips, tmp_path):
    """Random-weight MobileNetV3's features are about 1e-12: float16 stored them all as 0, and train and eval
    then ran on zeros without a word."""
    out = tmp_path / "features"
    command = ["extract", "--videos", six_clips["videos"], "--splits", six_clips["splits"], "--out", out,
               "--backbone", "mobilenet_v3_large", "--size", 32, "--frames", 4, "--weights", "none", "--no-progress"]
    result = invoke(*command, "--dtype", "float16")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [last] = result.stderr.strip().splitlines()
    assert last.startswith("Error: mobilenet_v3_large (--weights none) gives features float16 cannot hold: 100% of")
    assert last.endswith("extract with --dtype float32")
    assert not out.exists()  # nothing half-made: the directory this run made held only its lock

    result = invoke(*command, "--dtype", "float32")
    assert result.exit_code == 0, result.output
    features = FeatureStore(out).features(FeatureStore(out).video_ids)
    assert features.dtype == np.float32 and np.count_nonzero(features) == features.size


def test_float16_features_of_normal_size_are_stored(synth_cache):
    features = FeatureStore(synth_cache).features(FeatureStore(synth_cache).video_ids).astype(np.float32)
    assert FeatureStore(synth_cache).settings["dtype"] == "float16" and 0 < np.mean(features == 0) < 0.5
    featurising.check_storable([features], ExtractConfig(videos="v", splits="s", out="o", dtype="float16"))
