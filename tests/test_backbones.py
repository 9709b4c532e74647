"""The backbone seam: every backbone's stored features equal an independent keras.applications computation on
genuine clips; VGG16's caches keep their fingerprint; a run refuses another backbone's cache; bad choices are
one line."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import QUIET, assert_one_line_error, extract_tiny, genuine_rgb, invoke, realdata, tiny_config, tiny_flags
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import ExtractConfig, fingerprint, to_dict
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import backbones
from ucfpipe.serving import predictor as predict
from ucfpipe.stage_one import extract
from ucfpipe.stage_two import evaluate, runs, train

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

FRAMES = 2


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_stored_features_equal_keras_applications_with_its_own_preprocess_input(
        name, genuine_videos, official_splits, tmp_path):
    import keras

    spec = backbones.BACKBONES[name]
    size = spec.min_size  # the smallest input each backbone allows keeps the test fast (InceptionV3: 75)
    keras.utils.set_random_seed(123)
    reference = getattr(keras.applications, spec.constructor)(include_top=False, weights=None, input_shape=(size, size, 3),
                                                              **dict(spec.options))
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
    run = runs.Run.__new__(runs.Run)  # only its record, which is all stage_one_config asks of a run
    run.directory, run.record = Path("no-such-run"), {"cache": {"extract_config": old_config, "settings": store.settings,
                                                                "fingerprint": store.fingerprint}}
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
    assert_one_line_error(result, f"{vgg16_file} holds the weights of another model (Keras 3 .weights.h5, 13 layers with "
                                  "weights, 14,714,688 parameters), but --backbone resnet50 is ResNet50(): its layer conv1_conv")
    assert not (tmp_path / "f").exists()


# -- weights files: checked layer by layer before any work, loaded whole --------------------------------------------
MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"
MOBILENET_075_TOP = "mobilenet_7_5_224_tf_from_tfjs.h5"


@pytest.mark.parametrize(
    "backbone, fragment",
    [("mobilenet_v1_075", "holds MobileNet(alpha=0.25) weights without the ImageNet classifier (legacy Keras HDF5, 54 "
                          "layers with weights, 218,544 parameters), but --backbone mobilenet_v1_075 is MobileNet(alpha=0.75): "
                          "its layer conv1 (number 1 with weights) holds 3x3x3x24, the file's conv1 3x3x3x8"),
     ("vgg16", "holds the weights of another model (legacy Keras HDF5, 54 layers with weights, 218,544 parameters), but "
               "--backbone vgg16 is VGG16(): its layer block1_conv1")],
)
def test_a_genuine_weights_file_of_another_width_or_backbone_is_one_line_before_any_work(
        backbone, fragment, synth_dataset, tmp_path):
    weights = realdata() / "weights" / MOBILENET_025
    out = tmp_path / "f"
    result = invoke("extract", "--videos", synth_dataset["videos"], "--splits", synth_dataset["splits"], "--out", out,
                    *tiny_flags(), "--weights", weights, "--backbone", backbone)
    assert_one_line_error(result, f"{weights} {fragment}")
    assert not out.exists()


def test_a_with_top_file_is_loaded_whole_into_the_backbone_without_its_classifier():
    """Every layer of the backbone takes the file's arrays (read back and compared); the classifier is skipped."""
    from ucfpipe.models.extractor import load_application

    weights = realdata() / "weights" / MOBILENET_075_TOP
    application = load_application("mobilenet_v1_075", str(weights), 32, 0)
    with h5py.File(weights, "r") as handle:
        for name in ("conv1", "conv_dw_7", "conv_pw_13_bn"):
            filed = [handle[name][n][()] for n in handle[name].attrs["weight_names"]]
            assert all(np.array_equal(a, b) for a, b in zip(application.get_layer(name).get_weights(), filed)), name
    assert "conv_preds" not in [layer.name for layer in application.layers]


def test_a_keras3_weights_file_with_its_classifier_is_accepted_and_another_width_refused(tmp_path):
    import keras

    from ucfpipe.models.extractor import check_weights_file, load_application

    keras.utils.set_random_seed(1)
    full = keras.applications.MobileNet(alpha=0.25, include_top=True, weights=None, input_shape=(64, 64, 3))
    path = tmp_path / "mobilenet_025_top.weights.h5"
    full.save_weights(path)
    application = load_application("mobilenet_v1_025", str(path), 32, 0)
    for layer in (layer for layer in application.layers if layer.weights):
        assert all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), full.get_layer(layer.name).get_weights()))
    with pytest.raises(UcfpipeError, match=r"holds MobileNet\(alpha=0.25\) weights with its ImageNet classifier \(1 more "
                                           r"layer\) \(Keras 3 .weights.h5, .*, but --backbone mobilenet_v1_050 is "
                                           r"MobileNet\(alpha=0.5\): its layer conv1 \(filed as conv2d\) holds 3x3x3x16"):
        check_weights_file("mobilenet_v1_050", str(path))
