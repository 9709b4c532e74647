"""Stage settings: one dataclass per stage, loaded from `stages/<stage>.toml` with command-line overrides.

Each setting is declared once, here: its field holds its default and its flag's help (`documented`), and
commands/options.py makes every command's flag from it. Precedence is defaults < config file < command-line
flags. Unknown keys and wrong types are errors, not warnings: a typo in a config file must never silently fall
back to a default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.datasets import NAMES as DATASETS
from ucfpipe.datasets.ucf101 import SPLITS
from ucfpipe.models import backbones

POOLINGS = ("avg", "max", "none")
STORAGE_DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")
CELLS = ("lstm", "gru", "transformer")
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


def documented(default, help: str, *, shown: str = "", path: str = "", flag: str = ""):
    """A setting's dataclass field with its flag's help: the one place a setting is described. Every command that
    takes it gets the option `commands.options.setting_option` makes from this, with the same flag, help and
    `[default: ...]`. `help` may name `{choices}` (listed from CHOICES; the library then refuses other values, in
    the same words for a flag and a config file's key); `shown` is the default the help shows where the field's is
    worked out later ("" = the backbone's layer); `path` "any" or "file" when the value names a path;
    `flag` a --yes/--no pair."""
    return field(default=default, metadata={"help": help, "shown": shown, "path": path, "flag": flag})


_DEFAULT_BACKBONE = backbones.get(backbones.DEFAULT)  # its layers are named where a setting's default is "the backbone's"
DATASET_HELP = "How --splits and --videos are laid out: {choices} (see docs/datasets.md)."


@dataclass
class ExtractConfig:
    videos: str = documented("", "The UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi.", path="any")
    splits: str = documented("", "The ucfTrainTestlist/ folder; every clip it lists is extracted once.", path="any")
    dataset: str = documented("ucf101", DATASET_HELP)  # ucfpipe.datasets
    out: str = documented("features/ucf101", "Feature cache directory.", path="any")
    frames: int = documented(40, "T, frames sampled uniformly over each whole clip.")
    # 224: most backbones' native size (InceptionV3's is 299)
    size: int = documented(224, "Frames are resized to SIZE x SIZE.")
    backbone: str = documented(backbones.DEFAULT, "Image model: {choices} (see docs/backbones.md).")
    weights: str = documented("imagenet", "imagenet, none (random, seeded) or a path to the backbone's weights file.")
    layer: str = documented("", "Backbone layer to store.",  # "" is the backbone's default
                            shown=f"the backbone's; {_DEFAULT_BACKBONE.name}: {_DEFAULT_BACKBONE.default_layer}")
    pooling: str = documented("avg", "Spatial pooling; none keeps the map.")  # avg/max: one vector per frame
    dtype: str = documented("float16", "Storage dtype.")
    precision: str = documented("float32", "Backbone compute dtype.")  # bfloat16 pays off on GPUs
    # frames of many clips share one batch
    batch_size: int = documented(64, "Frames per model call.")
    workers: int = documented(2, "Decoding threads.")
    shard_clips: int = documented(128, "Clips per HDF5 shard (a shard is also written every --shard-seconds).")
    shard_seconds: float = documented(120.0, "Seconds of work after which a shard is written.")
    allow_missing: bool = documented(False, "Extract what is on disk when listed clips are missing.")
    seed: int = documented(0, "Seed of --weights none.")
    shard: str = documented("", "i/N: only the i-th (0-based) of N disjoint parts of the clip list; join them with "
                                "`ucfpipe merge`.")  # for job arrays
    views: str = documented("center", "Views stored per clip, e.g. flip,crops,time or all (see docs/stage-two.md).")
    # Where stage one runs; neither changes a feature, so neither is in the fingerprint (feature_settings).
    engine: str = documented("local", "local: threads and the model here; ray: decode tasks and model actors on a Ray "
                                      "cluster (docs/ray.md).")
    address: str = documented("", "--engine ray: auto or HOST:PORT of a running cluster; unset, a cluster is started "
                                  "on this machine for the run.")

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
        self.layer = self.layer or backbones.get(self.backbone).default_layer
        backbones.check_layer(self.backbone, self.layer)  # the table's pattern: no model is built to check a setting
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
    return described(cls, name).default, typing.get_type_hints(cls)[name]


def described(cls, name: str) -> dataclasses.Field:
    """The field of setting `name` of `cls`; its `metadata` holds what `documented` was given."""
    for found in fields(cls):
        if found.name == name:
            return found
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def read_toml(path: Path, what: str = "config file") -> dict:
    """The TOML file at `path`; missing or malformed is one line naming it as `what` ("--space", ...)."""
    if not path.is_file():
        where = f" (relative to {Path.cwd()}: run from the ucfpipe checkout, or give its full path)" if not path.is_absolute() else ""
        raise UcfpipeError(f"{what} {path} not found{where}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UcfpipeError(f"{what} {path} is not valid TOML: {err}") from None


def load_config(cls, path: str | Path | None = None, overrides: dict | None = None):
    """Defaults, then the TOML file at `path`, then `overrides` (None values mean 'not given')."""
    known = {f.name for f in fields(cls)}
    values: dict = {}
    file_keys: dict[str, str] = {}  # setting -> "PATH: KEY", for messages about a value the file gave
    if path is not None:
        path = Path(path)
        data = read_toml(path)
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


def _check_transformer(config) -> None:
    """The transformer cell's own rules (also for an ensemble's transformer member, `train --cells`)."""
    if config.bidirectional:
        raise UcfpipeError(f"{_named(config, 'bidirectional')} does not apply to the transformer cell: attention reads "
                           "every step both ways already; drop it (or pass --unidirectional)")
    if config.units % config.heads:
        units, heads = _named(config, "units"), _named(config, "heads")
        raise UcfpipeError(f"{units} {config.units} must be a multiple of {heads} {config.heads} for the transformer "
                           f"cell (each head gets units / heads); e.g. {units} {config.units - config.units % config.heads or config.heads}")


@dataclass
class TrainConfig:
    features: str = documented("features/ucf101", "Feature cache made by `ucfpipe extract`.", path="any")
    splits: str = documented("", "The ucfTrainTestlist/ folder.", path="any")
    # the test list is left to `ucfpipe eval`
    split: int = documented(1, "Official split 1, 2 or 3: trains on its training list.")
    out: str = documented("", "Run directory to create (model, logs, curves).", path="any")
    cell: str = documented("lstm", "Sequence model: {choices} (a temporal Transformer encoder).")
    units: int = documented(512, "Units per recurrent layer (per direction); the transformer's width.")
    layers: int = documented(1, "Stacked recurrent layers; the transformer's encoder blocks.")
    bidirectional: bool = documented(False, "Read clips both ways (recurrent cells).", flag="--bidirectional/--unidirectional")
    heads: int = documented(4, "The transformer's attention heads; --units must be a multiple of it.")
    dropout: float = documented(0.5, "Dropout after each recurrent layer; the transformer's after its pooling.")
    epochs: int = documented(50, "At most this many epochs.")  # early stopping usually ends sooner
    batch_size: int = documented(32, "Clips per step.")
    learning_rate: float = documented(3e-4, "Adam's learning rate.")
    weight_decay: float = documented(0.0, "Decoupled weight decay, 0 = off.")  # AdamW-style
    clipnorm: float = documented(1.0, "Gradient norm clipping, 0 = off.")
    label_smoothing: float = documented(0.1, "Cross-entropy label smoothing.")
    # UCF-101's lists train on 18 groups; per dataset: datasets.base.HOLDOUTS
    val_groups: int = documented(3, "Training-list groups held out for validation (hmdb51 and folders without groups: "
                                    "about this many clips per class; docs/datasets.md).")
    # also drives early stopping
    monitor: str = documented("val_accuracy", "Picks the best epoch.")
    patience: int = documented(10, "Epochs without improvement before stopping.")
    # train/val features up to this size are loaded into memory, larger are streamed
    memory_limit_gb: float = documented(4.0, "Load features into memory up to this size, else stream.")
    # (and later evaluate)
    allow_missing: bool = documented(False, "Use the clips present when the cache lacks some of the split.")
    seed: int = documented(0, "Validation groups, initialisation, dropout, batch order.")
    train_views: str = documented("all", "all: each epoch a random stored view per clip.")  # center: plain view only
    time_jitter: float = documented(0.1, "Training only: chance a step is replaced by a neighbour.")
    step_drop: float = documented(0.05, "Training only: chance a step is dropped (previous repeated).")
    # batch_size is the global batch
    distribute: str = documented("none", "data: data parallel over every device (JAX backend).")

    def validate(self) -> "TrainConfig":
        _require(self.features, "features", "the feature cache made by `ucfpipe extract`")
        _require(self.splits, "splits", "the ucfTrainTestlist/ folder")
        _require(self.out, "out", "the run directory to create")
        if self.split not in SPLITS:
            raise UcfpipeError(f"{_named(self, 'split')} must be 1, 2 or 3, got {self.split}")
        _check_positive(self, "units", "layers", "heads", "epochs", "batch_size", "val_groups", "patience")
        _check_choice(self, "cell", "monitor", "train_views", "distribute")
        if self.cell == "transformer":
            _check_transformer(self)
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
    videos: str = documented("", "The UCF-101/ folder.", path="any")
    splits: str = documented("", "The ucfTrainTestlist/ folder.", path="any")
    dataset: str = documented("ucf101", DATASET_HELP)
    split: int = documented(1, "Fine-tune on this split's training clips (its test list is never read).")
    # "" is worked out by validate()
    out: str = documented("", "Backbone weights file to write (*.weights.h5).", path="file",
                          shown="weights/<backbone>_finetuned_split<split>.weights.h5")
    # extract with the same --backbone
    backbone: str = documented(backbones.DEFAULT, "Image model to fine-tune: {choices}.")
    weights: str = documented("imagenet", "Starting weights: imagenet, none or a file.")
    size: int = documented(224, "Frames are resized to SIZE x SIZE.")
    frames_per_clip: int = documented(8, "Frames sampled uniformly from each clip, labelled with its class.")
    # This layer and every later one are trained; "" is the backbone's last stage.
    trainable_from: str = documented("", "First backbone layer to train; earlier ones stay frozen.",
                                     shown=f"the backbone's last stage; {_DEFAULT_BACKBONE.name}: "
                                           f"{_DEFAULT_BACKBONE.finetune_from}")
    epochs: int = documented(5, "At most this many epochs.")
    batch_size: int = documented(32, "Frames per step.")
    learning_rate: float = documented(1e-5, "Adam's learning rate: small, the pretrained filters should move, not be "
                                            "overwritten.")
    dropout: float = documented(0.5, "Dropout before the new classifier.")
    val_groups: int = documented(3, "Training-list groups held out for validation.")
    patience: int = documented(2, "Epochs without improvement of validation accuracy before stopping.")
    workers: int = documented(2, "Decoding threads.")  # of the input pipeline
    seed: int = documented(0, "Validation groups, --weights none, initialisation, dropout, frame order and flips.")

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
