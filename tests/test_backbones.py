"""The backbone seam: every backbone's stored features equal an independent keras.applications computation on
genuine clips; VGG16's caches keep their fingerprint; a run refuses another backbone's cache; bad choices are
one line."""

import json

import cv2
import numpy as np
import pytest

from helpers import QUIET, assert_one_line_error, extract_tiny, invoke, tiny_config, tiny_flags
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import ExtractConfig, fingerprint, to_dict
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import backbones
from ucfpipe.serving import predictor as predict
from ucfpipe.stage_one import extract
from ucfpipe.stage_two import evaluate, train

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

FRAMES = 2


def genuine_rgb(path, frame_indices, size: int) -> np.ndarray:
    """The sampled frames of a clip, decoded and resized with OpenCV alone, as RGB."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    return np.stack([cv2.cvtColor(cv2.resize(frames[i], (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                     for i in frame_indices])


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_stored_features_equal_keras_applications_with_its_own_preprocess_input(
        name, genuine_videos, official_splits, tmp_path):
    import keras

    spec = backbones.BACKBONES[name]
    size = spec.min_size  # the smallest input each backbone allows keeps the test fast (InceptionV3: 75)
    keras.utils.set_random_seed(123)
    reference = getattr(keras.applications, spec.constructor)(include_top=False, weights=None, input_shape=(size, size, 3))
    weights = tmp_path / f"{name}.weights.h5"
    reference.save_weights(weights)  # a seeded weights file of our own, as a user passes with --weights PATH
    # float32 storage: random MobileNetV3/EfficientNet features are ~1e-11/1e-6, below float16's range; this test
    # is about the model and its preprocessing, the storage rounding has its own tests.
    config = ExtractConfig(videos=str(genuine_videos), splits=str(official_splits), out=str(tmp_path / "features"),
                           frames=FRAMES, size=size, backbone=name, weights=str(weights), dtype="float32",
                           batch_size=8, workers=1, allow_missing=True)
    assert extract.run(config, progress=False, log=lambda *_: None)["extracted"] == 6
    store = FeatureStore(tmp_path / "features")
    assert store.feature_shape == (spec.feature_size,)
    assert store.settings["model"] == f"keras.applications.{spec.constructor}(include_top=False)"
    assert store.config["backbone"] == name

    layer = reference.output if spec.default_layer == backbones.OUTPUT else reference.get_layer(spec.default_layer).output
    cut = keras.Model(reference.input, layer)
    preprocess_input = getattr(keras.applications, spec.module).preprocess_input
    clip = store.clip("Punch/v_Punch_g03_c01")
    rgb = genuine_rgb(genuine_videos / "Punch" / "v_Punch_g03_c01.avi", clip.frame_indices[0], size)
    expected = np.asarray(cut.predict_on_batch(preprocess_input(rgb.astype("float32")))).mean(axis=(1, 2))
    error = np.linalg.norm(clip.features[0] - expected) / np.linalg.norm(expected)
    assert error < 1e-2, f"{name}: relative error {error:.1e}"


def test_vgg16_settings_are_those_of_caches_made_before_backbones_were_selectable(synth_cache):
    """No `backbone` key for VGG16: an existing UCF-101/VGG16 cache keeps its fingerprint and stays valid."""
    settings = FeatureStore(synth_cache).settings
    assert set(settings) == {"format", "model", "weights", "seed", "backend", "layer", "pooling", "size", "frames",
                             "sampling", "resize", "views", "dtype", "precision", "keras"}
    assert settings["model"] == "keras.applications.VGG16(include_top=False)" and settings["layer"] == "block5_conv3"


def test_a_run_recorded_before_backbones_rebuilds_vgg16(synth_cache):
    """A run's record from before the choice has no backbone in its extract config: predict rebuilds VGG16."""
    store = FeatureStore(synth_cache)
    old_config = {k: v for k, v in store.config.items() if k != "backbone"}
    run = type("Recorded", (), {"record": {"cache": {"extract_config": old_config, "settings": store.settings,
                                                     "fingerprint": store.fingerprint}}})()
    config = predict.stage_one_config(run)
    assert config.backbone == "vgg16" and fingerprint(extract.feature_settings(config)) == store.fingerprint


def test_other_backbones_are_named_in_the_fingerprint():
    base = dict(videos="v", splits="s", weights="none", size=75)
    settings = {name: extract.feature_settings(ExtractConfig(backbone=name, **base).validate())
                for name in backbones.BACKBONES}
    assert len({fingerprint(s) for s in settings.values()}) == len(backbones.BACKBONES)
    assert all(s["backbone"] == name for name, s in settings.items() if name != "vgg16")


@pytest.fixture(scope="module")
def resnet_run(synth_dataset, tmp_path_factory):
    cache = extract_tiny(synth_dataset, tmp_path_factory.mktemp("resnet") / "features", backbone="resnet50")
    out = tmp_path_factory.mktemp("runs") / "resnet50"
    train.run(tiny_config(cache, synth_dataset["splits"], out), **QUIET)
    return {"cache": cache, "run": out}


def test_a_run_refuses_a_cache_of_another_backbone(resnet_run, synth_cache):
    with pytest.raises(UcfpipeError, match=r"is not the one .* was trained on .*backbone: the default here, resnet50 in training"):
        evaluate.run(resnet_run["run"], features=str(synth_cache), log=lambda *_: None)


def test_predict_uses_the_backbone_of_the_run(resnet_run, synth_dataset):
    predictor = predict.Predictor(resnet_run["run"])
    assert predictor.stage_one.backbone == "resnet50"
    store = FeatureStore(resnet_run["cache"])
    video_id = store.video_ids[0]
    expected = predictor.classifier.predict(store.features([video_id]).astype(np.float32), verbose=0)[0]
    np.testing.assert_allclose(predictor.probabilities(f"{synth_dataset['videos']}/{video_id}.avi"), expected, atol=1e-4)


@pytest.mark.parametrize(
    "flags, fragment",
    [(["--backbone", "resnet"], "unknown backbone 'resnet'; choose one of: vgg16, resnet50, inception_v3, "
                                "efficientnet_b0, mobilenet_v3_large, convnext_tiny"),
     (["--backbone", "inception_v3", "--size", "64"], "size must be at least 75 for inception_v3"),
     (["--backbone", "resnet50", "--layer", "conv9_block1_out"],
      "resnet50 has no layer 'conv9_block1_out' to store; choose one of: output, conv2_block1_out,")],
)
def test_bad_backbone_choices_are_one_line_errors_before_any_work(synth_dataset, tmp_path, flags, fragment):
    out = tmp_path / "f"
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--out", out,
                    *tiny_flags(), *flags)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_a_layer_other_than_the_default_is_built():
    config = ExtractConfig(videos="v", splits="s", backbone="resnet50", layer="conv4_block6_out", size=32, weights="none").validate()
    assert config.layer == "conv4_block6_out"
    from ucfpipe.models.extractor import build_extractor_for

    assert build_extractor_for(config).output.shape == (None, 1024)  # ResNet50's stage 4 has 1024 channels


def test_the_manifest_config_records_the_backbone_and_its_resolved_layer(synth_cache):
    manifest = json.loads((synth_cache / "manifest.json").read_text())
    assert manifest["config"]["backbone"] == "vgg16" and manifest["config"]["layer"] == "block5_conv3"
    assert to_dict(ExtractConfig())["layer"] == ""  # "" means the backbone's default until validated


def test_a_weights_file_of_another_backbone_is_a_one_line_error(synth_dataset, tmp_path):
    import keras

    vgg16_file = tmp_path / "vgg16.weights.h5"
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3)).save_weights(vgg16_file)
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"],
                    "--out", tmp_path / "f", *tiny_flags(), "--weights", vgg16_file, "--backbone", "resnet50")
    assert_one_line_error(result, f"{vgg16_file} is not a resnet50 (include_top=False) weights file")
