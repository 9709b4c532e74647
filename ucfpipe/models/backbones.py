"""The backbone table: one plain record per `keras.applications` image model that stage one can use.

No Keras import here, so settings can be checked (name, input size) before Keras is loaded; `extractor.py`
builds the models from these records. Adding a backbone is adding one record.
"""

from __future__ import annotations

from dataclasses import dataclass

from ucfpipe.core.errors import UcfpipeError

# The layer name that means "the application's own output" (include_top=False). MobileNetV3's and ConvNeXt's
# last layers have auto-numbered names that change with what else the process built, so they are asked for
# by this name instead.
OUTPUT = "output"


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # the keras.applications attribute: keras.applications.<constructor>(include_top=False, ...)
    module: str  # keras.applications.<module> holds its preprocess_input
    # How uint8 RGB becomes the model's input, in keras.applications.imagenet_utils' terms: "caffe" (RGB -> BGR,
    # minus the ImageNet means), "tf" (scaled to [-1, 1]), or "none": the application preprocesses inside itself
    # (its preprocess_input is the identity).
    preprocessing: str
    default_layer: str  # the layer stored by default (OUTPUT: the application's output)
    layers: str  # regular expression: the layer names offered as choices (OUTPUT always is one)
    default_pooling: str
    native_size: int  # the input size its ImageNet weights were trained at
    min_size: int  # the smallest input keras.applications builds it for
    feature_size: int  # numbers per frame at the default layer, pooled
    imagenet_file: str  # Keras' ImageNet include_top=False weights file (in ~/.keras/models/ once downloaded)
    finetune_from: str  # `ucfpipe finetune` trains this layer and every later one: the last stage
    imagenet_top1: float  # ImageNet top-1 accuracy of the full model, as the keras.applications docs list it
    params_millions: float  # parameters of the full model (with its ImageNet classifier), same source
    # Why tf2onnx cannot convert it ("" = it can): export refuses --format onnx with this reason up front, where
    # the converter would write a model that onnxruntime cannot load (export also loads what it wrote, to be sure).
    onnx_problem: str = ""
    # Keyword arguments of the constructor beyond include_top/weights/input_shape, as (name, value) pairs (a
    # frozen record stays hashable): MobileNet's width multiplier `alpha`.
    options: tuple[tuple[str, float], ...] = ()

    @property
    def title(self) -> str:
        """How messages name the model: its constructor call, e.g. MobileNet(alpha=0.75)."""
        return f"{self.constructor}({', '.join(f'{key}={value}' for key, value in self.options)})"


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("vgg16", "VGG16", "vgg16", "caffe", "block5_conv3", r"block\d_(conv\d|pool)", "avg", 224, 32, 512,
                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "block5_conv1", 0.713, 138.4),
        Backbone("resnet50", "ResNet50", "resnet50", "caffe", "conv5_block3_out", r"conv\d_block\d+_out", "avg", 224, 32,
                 2048, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "conv5_block1_1_conv", 0.749, 25.6),
        Backbone("inception_v3", "InceptionV3", "inception_v3", "tf", "mixed10", r"mixed\d+", "avg", 299, 75, 2048,
                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "mixed9", 0.779, 23.9),
        Backbone("efficientnet_b0", "EfficientNetB0", "efficientnet", "none", "top_activation",
                 r"block\d[a-z]_add|top_activation", "avg", 224, 32, 1280, "efficientnetb0_notop.h5",
                 "block7a_expand_conv", 0.771, 5.3),
        Backbone("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", "none", OUTPUT,
                 r"expanded_conv(_\d+)?_add", "avg", 224, 32, 960,
                 "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", "expanded_conv_14_expand", 0.756, 5.4),
        Backbone("convnext_tiny", "ConvNeXtTiny", "convnext", "none", OUTPUT,
                 r"convnext_tiny_stage_\d_block_\d+_identity", "avg", 224, 32, 768, "convnext_tiny_notop.h5",
                 "convnext_tiny_downsampling_block_2", 0.813, 28.6,
                 onnx_problem="tf2onnx leaves its exact GELU (Erfc) and its depthwise convolutions unconverted"),
        # MobileNet v1 at the four widths Keras publishes ImageNet weights for. Top-1 and parameters: the
        # keras.applications docs list alpha 1.0 (0.704, 4.3 M); the other widths from the MobileNet paper's Table 6
        # (arXiv:1704.04861), parameters as Keras counts them with the classifier.
        *(Backbone(name, "MobileNet", "mobilenet", "tf", "conv_pw_13_relu", r"conv_pw_\d+_relu", "avg", 224, 32,
                   int(1024 * alpha), f"mobilenet_{text}_224_tf_no_top.h5", "conv_dw_12", top1, params,
                   options=(("alpha", alpha),))
          for name, alpha, text, top1, params in (("mobilenet_v1", 1.0, "1_0", 0.704, 4.3),
                                                  ("mobilenet_v1_075", 0.75, "7_5", 0.684, 2.6),
                                                  ("mobilenet_v1_050", 0.5, "5_0", 0.637, 1.3),
                                                  ("mobilenet_v1_025", 0.25, "2_5", 0.506, 0.5))),
    )
}
DEFAULT = "vgg16"


def get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise UcfpipeError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None


def check_size(name: str, size: int) -> None:
    backbone = get(name)
    if size < backbone.min_size:
        raise UcfpipeError(f"--size must be at least {backbone.min_size} for {name} (its smallest input), got {size}")
