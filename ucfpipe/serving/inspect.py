"""`ucfpipe inspect`: what a backbone's own ImageNet classifier sees in the frames stage one would give it.

The check to run on a new dataset (or a new weights file) before spending GPU hours on extraction: a biking clip
should look like a bicycle to an ImageNet network, a guitar clip like a guitar. Frames go through stage one's
own functions (`read_clip`: decoding, the centres of T equal segments, INTER_AREA resize, RGB; the backbone's
`Preprocess` layer), so a colour-order, preprocessing or sampling mistake there shows here as nonsense.

A clip's answer is the classifier applied to the mean of its frames' pooled features (the input of the with-top
model's classifier: global average pooling of the application's output for MobileNet, ResNet50, InceptionV3,
EfficientNet, MobileNetV3 and ConvNeXt, the features stage one stores with `--pooling avg` at the default layer;
VGG16's classifier takes the flattened block5_pool map instead, so its clip mean is the mean of those maps).
An image is a clip of one frame.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import backbones
from ucfpipe.serving.predictor import check_top, top_classes
from ucfpipe.video.decode import IMAGE_EXTENSIONS, VideoError, read_clip, read_image

# The 1,000 ImageNet class names in the classifiers' index order (from the metadata.json beside Google's
# TensorFlow.js MobileNet v1 model, Apache-2.0), shipped as package data.
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.json")


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    return tuple(json.loads(CLASSES_FILE.read_text(encoding="utf-8")))


@dataclass
class Inspection:
    """One path: the top classes of each sampled frame and of the clip's mean."""

    path: str
    frame_indices: list[int] = field(default_factory=list)
    num_frames: int = 0  # frames decoding found (1 for an image)
    frames: list[list[tuple[int, float]]] = field(default_factory=list)  # (ImageNet index, probability), per frame
    mean: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return {"path": self.path,
                "frames": [{"index": index, "top": _entries(top)} for index, top in zip(self.frame_indices, self.frames)],
                "mean": {"top": _entries(self.mean)}}


def _entries(top: list[tuple[int, float]]) -> list[dict]:
    labels = imagenet_labels()
    return [{"class": index, "label": labels[index], "probability": round(probability, 6)} for index, probability in top]


def check(backbone: str, weights: str, frames: int, size: int, top: int) -> None:
    """Every setting that needs no model, checked before Keras loads."""
    backbones.check_size(backbone, size)
    check_top(top)
    if frames < 1:
        raise UcfpipeError(f"--frames must be at least 1, got {frames}")
    if weights == "none":
        raise UcfpipeError("--weights none has no classifier to inspect with; pass --weights imagenet or a weights file "
                           "with the ImageNet classifier")
    if weights != "imagenet" and not Path(weights).is_file():
        raise UcfpipeError(f"--weights {weights}: no such file; pass --weights imagenet or a {backbone} weights file with "
                           "the ImageNet classifier")


@functools.lru_cache(maxsize=None)
def _classifier_length(backbone: str) -> int:
    """How many of the with-top model's last layers are its classifier (pooling or flatten first): the layers
    include_top=True adds to the application."""
    from ucfpipe.models.extractor import load_application

    spec = backbones.get(backbone)
    with_top = load_application(backbone, "none", spec.native_size, 0, include_top=True)
    return len(with_top.layers) - len(load_application(backbone, "none", spec.min_size, 0).layers)


class Inspector:
    """The backbone with its ImageNet classifier, split where the classifier starts: uint8 RGB frames -> pooled
    features (stage one's preprocessing inside) and pooled features -> ImageNet probabilities.
    `preprocessing` replaces the backbone's own mode ("caffe", "tf", "none"): the tests feed it wrongly on purpose."""

    def __init__(self, backbone: str, weights: str, size: int, preprocessing: str = ""):
        import keras

        from ucfpipe.models.extractor import Preprocess, load_application

        spec = backbones.get(backbone)
        full = load_application(backbone, weights, size, 0, include_top=True)
        classifier = full.layers[-_classifier_length(backbone):]
        pool = classifier[0]  # GlobalAveragePooling2D (keepdims for MobileNet), or VGG16's Flatten
        frames = keras.Input((size, size, 3), dtype="uint8", name="frames")
        preprocess = Preprocess(preprocessing or spec.preprocessing, dtype="float32", name=f"{backbone}_preprocess")
        body = keras.Model(full.inputs, pool.input, name=f"{backbone}_body")
        self.features = keras.Model(frames, pool(body(preprocess(frames))), name=f"{backbone}_pooled")
        pooled = keras.Input(tuple(pool.output.shape[1:]), name="pooled")
        x = pooled
        for layer in classifier[1:]:
            x = layer(x)
        self.classifier = keras.Model(pooled, x, name=f"{backbone}_imagenet_classifier")

    def probabilities(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(each frame's probabilities (T, 1000), the clip's: the classifier on the mean pooled feature (1000,))."""
        features = np.asarray(self.features.predict_on_batch(frames), np.float32)
        per_frame = np.asarray(self.classifier.predict_on_batch(features), np.float32)
        mean = np.asarray(self.classifier.predict_on_batch(features.mean(axis=0, keepdims=True)), np.float32)[0]
        return per_frame.reshape(len(frames), -1), mean.reshape(-1)


def read(path: str, frames: int, size: int):
    """Stage one's frames of a video (T sampled), or an image as one frame."""
    if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path, size)
    return read_clip(path, frames, size)


def run(paths: list[str], backbone: str, weights: str, frames: int = 8, size: int = 0, top: int = 5,
        preprocessing: str = "") -> list[Inspection]:
    """Inspect each path; one that cannot be read gets its error, the others are still inspected."""
    size = size or backbones.get(backbone).native_size
    check(backbone, weights, frames, size, top)
    inspector = Inspector(backbone, weights, size, preprocessing)
    found = []
    for path in paths:
        try:
            clip = read(path, frames, size)
        except VideoError as err:
            found.append(Inspection(str(path), error=str(err)))
            continue
        per_frame, mean = inspector.probabilities(clip.frames)
        classes = range(per_frame.shape[1])
        found.append(Inspection(str(path), [int(i) for i in clip.frame_indices], clip.num_frames,
                                [top_classes(p, classes, top) for p in per_frame], top_classes(mean, classes, top)))
    return found


def table(inspections: list[Inspection]) -> list[str]:
    """One row per clip: its file, its folder (a dataset's class), the clip's top-1 and its probability."""
    rows = [(Path(i.path).name, Path(i.path).parent.name, imagenet_labels()[i.mean[0][0]], f"{i.mean[0][1]:.3f}")
            for i in inspections if i.error is None]
    header = ("clip", "folder", "ImageNet sees (mean of the frames)", "probability")
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]
