"""Classify video files with a trained run: decode and sample exactly as stage one did for the run's cache,
its backbone exactly as it was (rebuilt from the recorded settings, checked against the recorded fingerprint),
then the run's best model.

`rebuild_stage_one` is the one way a run's stage one is rebuilt (backbone, layer, pooling, size, weights,
precision and the storage dtype's rounding): predict, predict --window, live, `bench long` (through `Predictor`)
and export all use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ucfpipe.cache.format import describe_difference
from ucfpipe.config import ExtractConfig, fingerprint
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.stage_two import runs
from ucfpipe.video.decode import VideoError, read_clip


# -- the one top-k record: predict, windows and live all report classes this way ---------------------------------
def check_top(top: int) -> None:
    if top < 1:
        raise UcfpipeError(f"--top must be at least 1, got {top}")


def top_classes(probabilities: np.ndarray, classes, k: int) -> list[tuple[str, float]]:
    """(class, probability) of the k most probable classes, most probable first (ties in class order)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(classes[i], float(probabilities[i])) for i in order]


def top_dicts(top: list[tuple[str, float]]) -> list[dict]:
    return [{"class": c, "probability": round(p, 6)} for c, p in top]


@dataclass
class VideoPrediction:
    """One whole video's classes (`predict` without --window)."""

    video: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability), most probable first
    error: str | None = None  # why the file could not be classified

    def as_dict(self) -> dict:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        return {"video": self.video, "top": top_dicts(self.top)}


def stage_one_config(run: runs.Run, weights: str | None = None) -> ExtractConfig:
    """The run's extract settings, verified to reproduce its cache's fingerprint on this machine."""
    from ucfpipe.stage_one.extract import feature_settings

    recorded = run.cache_settings
    known = {f.name for f in fields(ExtractConfig)}
    config = ExtractConfig(**{k: v for k, v in run.extract_config.items() if k in known})
    if weights is not None:
        config.weights = weights
    elif recorded.get("weights") == "file":
        config.weights = _weights_file(run, config.weights, recorded["sha256"])
    settings = feature_settings(config)
    # The cache's file format changes how features are stored, not their numbers: a run trained on a cache of
    # an older format computes the same features now.
    settings["format"] = recorded.get("format", settings["format"])
    if fingerprint(settings) == run.fingerprint:
        return config
    if recorded.get("weights") == "file" and settings.get("sha256") != recorded.get("sha256"):
        raise UcfpipeError(
            f"weights file {config.weights} is not the one the run's features were made with (sha256 "
            f"{str(settings.get('sha256'))[:12]}... now, {recorded['sha256'][:12]}... recorded); pass --weights with the original file"
        )
    differences = describe_difference(settings, recorded, "now vs", "recorded")
    raise UcfpipeError(
        f"this machine would compute other features than the run was trained on ({differences}); "
        "predict with the setup the cache was extracted with"
    )


def _weights_file(run: runs.Run, recorded: str, sha256: str) -> str:
    """The recorded weights file, else one of its name beside the run (in the run directory or next to it):
    a run copied to another machine with its weights file still predicts."""
    if Path(recorded).is_file():
        return recorded
    name = Path(recorded).name
    for candidate in (run.directory / name, run.directory.parent / name):
        if candidate.is_file():
            return str(candidate)
    raise UcfpipeError(
        f"the weights file the run's features were extracted with, {recorded}, is not there, nor beside the run "
        f"({run.directory / name}); pass --weights with where it is now (its SHA-256 {sha256[:12]}... is checked)"
    )


@dataclass
class StageOne:
    """A run's stage one, rebuilt."""

    config: ExtractConfig  # the recorded settings, verified to reproduce the cache's fingerprint here
    model: object  # keras.Model: uint8 RGB frames (n, size, size, 3) -> features as the cache stored them, float32


def rebuild_stage_one(run: runs.Run, weights: str | None = None) -> StageOne:
    """The run's stage one exactly as it made the run's cache: the run's backbone (VGG16 for runs from before
    backbones were selectable) cut at its layer, pooled, at its size, weights and precision, its features
    rounded to the storage dtype. The caller's Python and NumPy random streams are left as they were."""
    from ucfpipe.models.extractor import as_stored, build_extractor_for, global_random_state_kept

    config = stage_one_config(run, weights)
    with global_random_state_kept():  # Keras draws layer seeds from Python's `random` while building
        return StageOne(config, as_stored(build_extractor_for(config), config.dtype))


class Predictor:
    """The run's stage one plus the run's classifier; `predict(path)` classifies one file. An ensemble
    directory (ucfpipe.stage_two.ensemble) gives the mean of its members' probabilities; its members must share one
    feature cache fingerprint, so that one backbone serves them all."""

    def __init__(self, run_dir: str | Path, weights: str | None = None, members: list[runs.Run] | None = None):
        """`members`: the run directory already read (`ensemble.load_run_or_ensemble(run_dir)`), not read again."""
        from ucfpipe.models.extractor import global_random_state_kept
        from ucfpipe.stage_two import ensemble

        self.members = members if members is not None else ensemble.load_run_or_ensemble(run_dir)
        self.run = self.members[0]
        stage_one = rebuild_stage_one(self.run, weights)
        self.stage_one, self.extractor = stage_one.config, stage_one.model
        with global_random_state_kept():
            self.classifiers = [member.load_model() for member in self.members]
        self.classifier = self.classifiers[0]
        self.classes = self.run.classes

    def probabilities(self, path: str | Path) -> np.ndarray:
        clip = read_clip(path, self.stage_one.frames, self.stage_one.size)
        return self.classify(self.featurise(clip.frames)[None])[0]

    def featurise(self, frames: np.ndarray) -> np.ndarray:
        """uint8 RGB frames (n, size, size, 3) -> their features (n, ...) as the cache stored them, as float32."""
        return np.asarray(self.extractor.predict_on_batch(frames), np.float32)

    def classify(self, sequences: np.ndarray) -> np.ndarray:
        """Feature sequences (n, T, ...) -> class probabilities (n, classes): the members' mean."""
        return np.mean([np.asarray(c.predict_on_batch(sequences), np.float64) for c in self.classifiers], axis=0)

    def predict(self, path: str | Path, top: int = 5) -> VideoPrediction:
        try:
            probabilities = self.probabilities(path)
        except VideoError as err:
            return VideoPrediction(str(path), error=str(err))
        return VideoPrediction(str(path), top=top_classes(probabilities, self.classes, top))

