"""Stage settings: one dataclass per stage, loaded from `stages/<stage>.toml` with command-line overrides.

Precedence is defaults < config file < command-line flags. Unknown keys and wrong types are errors, not
warnings: a typo in a config file must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import NAMES as DATASETS
from ucfpipe.datasets.ucf101 import SPLITS
from ucfpipe.models import backbones

POOLINGS = ("avg", "max", "none")
STORAGE_DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")
CELLS = ("lstm", "gru")
TRAIN_VIEWS = ("all", "center")
MONITORS = ("val_accuracy", "val_loss")
DISTRIBUTE = ("none", "data")
ENGINES = ("local", "ray")

# The settings that take one of a few names, by field name (the same in every stage): validate() checks them
# and the CLI builds its choices and help from them, so a new name is added here once.
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS,
    "backbone": tuple(backbones.BACKBONES),
    "pooling": POOLINGS,
    "dtype": STORAGE_DTYPES,
    "precision": PRECISIONS,
    "cell": CELLS,
    "monitor": MONITORS,
    "train_views": TRAIN_VIEWS,
    "distribute": DISTRIBUTE,
    "engine": ENGINES,
}


@dataclass
class ExtractConfig:
    videos: str = ""  # the UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi
    splits: str = ""  # the ucfTrainTestlist/ folder
    dataset: str = "ucf101"  # ucf101, hmdb51 or folders (ucfpipe.datasets): how `splits` and `videos` are laid out
    out: str = "features/ucf101"  # the feature cache directory
    frames: int = 40  # T: frames sampled uniformly over the whole clip
    size: int = 224  # frames are resized to size x size (224: most backbones' native size, InceptionV3's is 299)
    backbone: str = backbones.DEFAULT  # the image model: a name in ucfpipe.models.backbones.BACKBONES
    weights: str = "imagenet"  # "imagenet", "none" (random init, seeded) or a path to the backbone's weights file
    layer: str = ""  # the backbone's layer whose output is stored; "" is the backbone's default (VGG16: block5_conv3)
    pooling: str = "avg"  # "avg"/"max" store one vector per frame; "none" keeps the spatial map
    dtype: str = "float16"  # storage dtype of the features
    precision: str = "float32"  # compute dtype of the backbone ("bfloat16" pays off on GPUs)
    batch_size: int = 64  # frames per model call; frames of many clips share one batch
    workers: int = 2  # decoding threads
    shard_clips: int = 128  # clips per HDF5 shard (a shard is also flushed every `shard_seconds`)
    shard_seconds: float = 120.0
    allow_missing: bool = False  # extract what is on disk when listed clips are missing
    seed: int = 0  # seeds the random backbone weights of `weights = "none"`
    shard: str = ""  # "i/N": only the i-th (0-based) of N disjoint parts of the clip list, for job arrays
    views: str = "center"  # views stored per clip: names and presets of ucfpipe.video.views, e.g. "flip,crops,time"
    # Where stage one runs; neither changes a feature, so neither is in the fingerprint (feature_settings).
    engine: str = "local"  # "local": threads and one model here; "ray": decode tasks and model actors on a Ray cluster
    address: str = ""  # --engine ray: "" starts a Ray cluster on this machine for the run; "auto" or HOST:PORT joins one

    def view_names(self) -> tuple[str, ...]:
        from ucfpipe.video.views import parse_views

        return parse_views(self.views)

    def shard_part(self) -> tuple[int, int]:
        """(i, N) of `shard`, (0, 1) when unset."""
        if not self.shard:
            return 0, 1
        index, _, count = self.shard.partition("/")
        if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
            raise UcfpipeError(f"{_named(self, 'shard')} must be i/N with 0 <= i < N (e.g. 0/4 ... 3/4), got {self.shard}")
        return int(index), int(count)

    def validate(self) -> "ExtractConfig":
        _require(self.videos, "videos", "the UCF-101/ folder holding <Class>/<clip>.avi")
        _require(self.splits, "splits", "the ucfTrainTestlist/ folder")
        _check_positive(self, "frames", "batch_size", "workers", "shard_clips")
        backbones.check_size(self.backbone, self.size)
        self.shard_part()
        self.view_names()
        _check_choice(self, "dataset")
        default_layer = backbones.get(self.backbone).default_layer
        self.layer = self.layer or default_layer
        if self.layer != default_layer:
            from ucfpipe.models.extractor import check_layer

            check_layer(self.backbone, self.layer)
        _check_choice(self, "pooling", "dtype", "precision", "engine")
        if self.engine == "ray" and self.shard:
            raise UcfpipeError(f"--engine ray spreads the whole clip list over the cluster itself; drop --shard {self.shard} "
                               "(or keep --shard with --engine local for job arrays, joined by `ucfpipe merge`)")
        return self


def _require(value: str, name: str, what: str) -> None:
    if not value:
        raise UcfpipeError(f"{name} is not set: pass --{name.replace('_', '-')} DIR ({what}) or set it in the config file")


def _named(config, name: str) -> str:
    """A setting as the user gave it, for messages: its key in the config file it came from (load_config notes
    which), else its flag: "--batch-size", "stages/train.toml: batch_size"."""
    return getattr(config, "_file_keys", {}).get(name) or f"--{name.replace('_', '-')}"


def _check_positive(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise UcfpipeError(f"{_named(config, name)} must be a positive integer, got {getattr(config, name)}")


def _check_choice(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) not in CHOICES[name]:
            raise UcfpipeError(f"{_named(config, name)} must be one of {', '.join(CHOICES[name])}; got {getattr(config, name)}")


def _check_type(cls, name: str, value, source: str):
    hint = typing.get_type_hints(cls)[name]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(hint, True)
    if not ok:
        raise UcfpipeError(f"{source}: {name} must be of type {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def setting(cls, name: str) -> tuple[object, type]:
    """The dataclass default of setting `name` of `cls` and its type (str, int, float or bool)."""
    for field in fields(cls):
        if field.name == name:
            return field.default, typing.get_type_hints(cls)[name]
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def load_config(cls, path: str | Path | None = None, overrides: dict | None = None):
    """Defaults, then the TOML file at `path`, then `overrides` (None values mean 'not given')."""
    known = {f.name for f in fields(cls)}
    values: dict = {}
    file_keys: dict[str, str] = {}  # setting -> "PATH: KEY", for messages about a value the file gave
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UcfpipeError(f"config file {path} not found")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UcfpipeError(f"config file {path} is not valid TOML: {err}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise UcfpipeError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
            values[name] = _check_type(cls, name, value, str(path))
            file_keys[name] = f"{path}: {key}"
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _check_type(cls, name, value, f"--{name.replace('_', '-')}")
            file_keys.pop(name, None)
    config = cls(**values)
    config._file_keys = file_keys
    return config.validate()


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


# The settings that name files or folders (a `weights` of "imagenet" or "none" names none).
PATH_SETTINGS = ("videos", "splits", "features", "out", "weights")


def recorded(config) -> dict:
    """The settings as a record keeps them (a cache's manifest, a run's config.json): every path absolute, so the
    record means the same from any folder. Fingerprints hold no paths, so no fingerprint changes."""
    values = to_dict(config)
    for name in PATH_SETTINGS:
        value = values.get(name)
        if isinstance(value, str) and value and value not in ("imagenet", "none"):
            values[name] = str(Path(value).resolve())
    return values


def fingerprint(settings: dict) -> str:
    """A stable hash of everything that produced an artifact (Hugging Face datasets' idea): equal settings,
    equal fingerprint; any change, a different one."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class TrainConfig:
    features: str = "features/ucf101"  # the feature cache made by `ucfpipe extract`
    splits: str = ""  # the ucfTrainTestlist/ folder
    split: int = 1  # which official split: train on trainlist0N, the test list is left to `ucfpipe eval`
    out: str = ""  # the run directory
    cell: str = "lstm"  # "lstm" or "gru"
    units: int = 512  # per direction
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.5  # after every recurrent layer
    epochs: int = 50  # at most; early stopping usually ends sooner
    batch_size: int = 32
    learning_rate: float = 3e-4  # Adam
    weight_decay: float = 0.0  # decoupled (AdamW-style); 0 disables
    clipnorm: float = 1.0  # gradient norm clipping; 0 disables
    label_smoothing: float = 0.1
    val_groups: int = 3  # gGG groups of the training list held out for validation (UCF-101's lists train on 18); per dataset: datasets.base.HOLDOUTS
    monitor: str = "val_accuracy"  # "val_accuracy" or "val_loss": picks the best epoch and drives early stopping
    patience: int = 10  # epochs without improvement of `monitor` before stopping
    memory_limit_gb: float = 4.0  # train/val features up to this size are loaded into memory, larger are streamed
    allow_missing: bool = False  # train (and later evaluate) on the clips present when some are not in the cache
    seed: int = 0  # validation groups, weight init, dropout and batch order
    train_views: str = "all"  # "all": each epoch trains on a random stored view of each clip; "center": plain view only
    time_jitter: float = 0.1  # training only: probability that a step is replaced by a neighbouring one
    step_drop: float = 0.05  # training only: probability that a step is dropped (the previous one repeated)
    distribute: str = "none"  # "data": data parallel over every device (JAX backend; batch_size is the global batch)

    def validate(self) -> "TrainConfig":
        _require(self.features, "features", "the feature cache made by `ucfpipe extract`")
        _require(self.splits, "splits", "the ucfTrainTestlist/ folder")
        _require(self.out, "out", "the run directory to create")
        if self.split not in SPLITS:
            raise UcfpipeError(f"{_named(self, 'split')} must be 1, 2 or 3, got {self.split}")
        _check_positive(self, "units", "layers", "epochs", "batch_size", "val_groups", "patience")
        _check_choice(self, "cell", "monitor", "train_views", "distribute")
        for name in ("dropout", "label_smoothing", "time_jitter", "step_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UcfpipeError(f"{_named(self, name)} must be in [0, 1), got {getattr(self, name)}")
        for name in ("learning_rate", "memory_limit_gb"):
            if getattr(self, name) <= 0:
                raise UcfpipeError(f"{_named(self, name)} must be positive, got {getattr(self, name)}")
        for name in ("weight_decay", "clipnorm"):
            if getattr(self, name) < 0:
                raise UcfpipeError(f"{_named(self, name)} must be 0 (off) or positive, got {getattr(self, name)}")
        if self.seed < 0:
            raise UcfpipeError(f"{_named(self, 'seed')} must be a non-negative integer, got {self.seed}")
        return self


@dataclass
class FinetuneConfig:
    videos: str = ""  # the UCF-101/ folder
    splits: str = ""  # the ucfTrainTestlist/ folder
    dataset: str = "ucf101"  # ucf101, hmdb51 or folders (ucfpipe.datasets)
    split: int = 1  # train on trainlist0N's clips; the test list is never read
    # The backbone's weights file to write; "" is weights/<backbone>_finetuned_split<split>.weights.h5.
    out: str = ""
    backbone: str = backbones.DEFAULT  # the image model to fine-tune (extract with the same --backbone)
    weights: str = "imagenet"  # where fine-tuning starts: imagenet, a weights file, or none
    size: int = 224
    frames_per_clip: int = 8  # frames sampled uniformly from each clip, each labelled with the clip's class
    # This layer and every later one are trained, earlier ones stay frozen; "" is the backbone's last stage
    # (VGG16: block5_conv1).
    trainable_from: str = ""
    epochs: int = 5
    batch_size: int = 32  # frames per step
    learning_rate: float = 1e-5  # small: the pretrained filters should move, not be overwritten
    dropout: float = 0.5
    val_groups: int = 3
    patience: int = 2
    workers: int = 2  # decoding threads of the input pipeline
    seed: int = 0

    def validate(self) -> "FinetuneConfig":
        _require(self.videos, "videos", "the UCF-101/ folder")
        _require(self.splits, "splits", "the ucfTrainTestlist/ folder")
        _check_positive(self, "frames_per_clip", "epochs", "batch_size", "workers", "val_groups")
        if not 0.0 <= self.dropout < 1.0:
            raise UcfpipeError(f"{_named(self, 'dropout')} must be in [0, 1), got {self.dropout}")
        if self.split not in SPLITS:
            raise UcfpipeError(f"{_named(self, 'split')} must be 1, 2 or 3, got {self.split}")
        _check_choice(self, "dataset")
        backbones.check_size(self.backbone, self.size)
        self.trainable_from = self.trainable_from or backbones.get(self.backbone).finetune_from
        self.out = self.out or f"weights/{self.backbone}_finetuned_split{self.split}.weights.h5"
        if not self.out.endswith(".weights.h5"):
            raise UcfpipeError(f"{_named(self, 'out')} must end in .weights.h5 (Keras' weights format), got {self.out}")
        return self
