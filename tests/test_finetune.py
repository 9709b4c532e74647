"""Transfer learning's second step at a tiny size: a loadable weights file that changes the features."""

import numpy as np
import pytest

from ucfpipe.config import FinetuneConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models.extractor import build_extractor
from ucfpipe.stage_one import finetune

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`


def test_finetune_writes_loadable_weights_whose_features_differ(synth_dataset, tmp_path):
    out = tmp_path / "vgg16_ft.weights.h5"
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]),
                                     out=str(out), weights="none", size=32, frames_per_clip=2, epochs=1,
                                     batch_size=16, learning_rate=1e-3, val_groups=1, workers=1)
    record = finetune.run(config, log=lambda *_: None, verbose=0)
    assert out.is_file() and (tmp_path / "vgg16_ft.weights.h5.json").is_file()
    assert len(record["val_groups"]) == 1 and "val_accuracy" in record["history"]
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    before = np.asarray(build_extractor("none", size=32).predict_on_batch(frames))
    after = np.asarray(build_extractor(str(out), size=32).predict_on_batch(frames))
    assert after.shape == before.shape
    assert np.linalg.norm(after - before) / np.linalg.norm(before) > 1e-3
    # Only block5 trained: a block4 feature map is unchanged.
    block4_before = np.asarray(build_extractor("none", layer="block4_conv3", size=32).predict_on_batch(frames))
    block4_after = np.asarray(build_extractor(str(out), layer="block4_conv3", size=32).predict_on_batch(frames))
    np.testing.assert_allclose(block4_after, block4_before, rtol=1e-5, atol=1e-5)


def test_finetune_refuses_a_file_name_keras_cannot_save(synth_dataset):
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out="w.h5")
    with pytest.raises(UcfpipeError, match="must end in .weights.h5"):
        config.validate()


def test_finetune_trains_another_backbones_last_stage_only(synth_dataset, tmp_path):
    """ResNet50: its last stage (conv5) changes; stage 4, batch-normalisation statistics included, does not
    (the backbone runs in inference mode while fine-tuned)."""
    out = tmp_path / "resnet50_ft.weights.h5"
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out=str(out),
                            backbone="resnet50", weights="none", size=32, frames_per_clip=2, epochs=1, batch_size=16,
                            learning_rate=1e-3, val_groups=1, workers=1)
    record = finetune.run(config, log=lambda *_: None, verbose=0)
    assert record["config"]["trainable_from"] == "conv5_block1_1_conv"
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)

    def features(weights, layer=""):
        return np.asarray(build_extractor(weights, layer=layer, size=32, backbone="resnet50").predict_on_batch(frames))

    before, after = features("none"), features(str(out))
    assert np.linalg.norm(after - before) / np.linalg.norm(before) > 1e-3
    np.testing.assert_allclose(features(str(out), "conv4_block6_out"), features("none", "conv4_block6_out"),
                               rtol=1e-5, atol=1e-5)


def test_finetune_refuses_a_layer_the_backbone_does_not_have(synth_dataset):
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out="w.weights.h5",
                            backbone="resnet50", weights="none", size=32, trainable_from="block5_conv1").validate()
    with pytest.raises(UcfpipeError, match="resnet50 has no layer 'block5_conv1' to train from; its last stage starts at "
                                           "conv5_block1_1_conv"):
        finetune.build_finetune_model(config, 6)


def test_finetune_refuses_efficientnet_from_imagenet_before_any_download(synth_dataset):
    config = FinetuneConfig(videos=str(synth_dataset["videos"]), splits=str(synth_dataset["splits"]), out="w.weights.h5",
                            backbone="efficientnet_b0", weights="imagenet", size=32).validate()
    with pytest.raises(UcfpipeError, match="fine-tuning efficientnet_b0 from ImageNet weights is not supported"):
        finetune.build_finetune_model(config, 6)
