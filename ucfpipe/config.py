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

from .errors import UcfpipeError

POOLINGS = ("avg", "max", "none")
STORAGE_DTYPES = ("float16", "float32")
PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass
class ExtractConfig:
    videos: str = ""  # the UCF-101/ folder: <Class>/v_<Class>_gGG_cCC.avi
    splits: str = ""  # the ucfTrainTestlist/ folder
    out: str = "features/ucf101"  # the feature cache directory
    frames: int = 40  # T: frames sampled uniformly over the whole clip
    size: int = 224  # frames are resized to size x size (VGG16's native 224)
    weights: str = "imagenet"  # "imagenet", "none" (random init, seeded) or a path to a VGG16 weights file
    layer: str = "block5_conv3"  # VGG16 layer whose output is stored
    pooling: str = "avg"  # "avg"/"max" store one vector per frame; "none" keeps the spatial map
    dtype: str = "float16"  # storage dtype of the features
    precision: str = "float32"  # compute dtype of VGG16 ("bfloat16" pays off on GPUs)
    batch_size: int = 64  # frames per model call; frames of many clips share one batch
    workers: int = 2  # decoding threads
    shard_clips: int = 128  # clips per HDF5 shard (a shard is also flushed every `shard_seconds`)
    shard_seconds: float = 120.0
    allow_missing: bool = False  # extract what is on disk when listed clips are missing
    seed: int = 0  # seeds the random VGG16 weights of `weights = "none"`

    def validate(self) -> "ExtractConfig":
        _require(self.videos, "videos", "the UCF-101/ folder holding <Class>/<clip>.avi")
        _require(self.splits, "splits", "the ucfTrainTestlist/ folder")
        _check_positive(self, "frames", "batch_size", "workers", "shard_clips")
        if self.size < 32:
            raise UcfpipeError(f"size must be at least 32 (VGG16's smallest input), got {self.size}")
        _check_choice(self, "pooling", POOLINGS)
        _check_choice(self, "dtype", STORAGE_DTYPES)
        _check_choice(self, "precision", PRECISIONS)
        return self


def _require(value: str, name: str, what: str) -> None:
    if not value:
        raise UcfpipeError(f"{name} is not set: pass --{name.replace('_', '-')} DIR ({what}) or set it in the config file")


def _check_positive(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise UcfpipeError(f"{name} must be a positive integer, got {getattr(config, name)}")


def _check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise UcfpipeError(f"{name} must be one of {', '.join(choices)}; got {getattr(config, name)!r}")


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


def load_config(cls, path: str | Path | None = None, overrides: dict | None = None):
    """Defaults, then the TOML file at `path`, then `overrides` (None values mean 'not given')."""
    known = {f.name for f in fields(cls)}
    values: dict = {}
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
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _check_type(cls, name, value, f"--{name.replace('_', '-')}")
    return cls(**values).validate()


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def fingerprint(settings: dict) -> str:
    """A stable hash of everything that produced an artifact (Hugging Face datasets' idea): equal settings,
    equal fingerprint; any change, a different one."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
