"""The streaming featuriser shared by windowed `predict` and `live`: frames in, features of the sampled frames
out (each frame through the CNN once), a ring buffer of the last T features, and the run's classifiers.

A run learnt to see T steps spread over one typical clip of its cache, so on a stream it looks at windows of
that duration sampled at T / duration frames per second: its *rate*.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ucfpipe.cache.store import FeatureStore
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.video.decode import resize_rgb


@dataclass(frozen=True)
class Rate:
    steps: int  # T, the classifier's sequence length
    clip_seconds: float  # the span T steps covered in training

    @property
    def sample_seconds(self) -> float:
        """Time between two sampled frames."""
        return self.clip_seconds / self.steps


def typical_clip_seconds(run) -> float | None:
    """The median clip duration of the run's cache: recorded in run.json since train records it, else read
    from the cache when it is still where training found it (and is the same cache); None otherwise."""
    if run.typical_clip_seconds is not None:
        return run.typical_clip_seconds
    try:
        with FeatureStore(run.cache_directory) as store:
            return store.typical_clip_seconds() if store.fingerprint == run.fingerprint else None
    except UcfpipeError:
        return None


def run_rate(predictor, window: float | None = None) -> Rate:
    """The predictor's rate: T over `window` seconds, by default over the typical clip of its run's cache."""
    steps = predictor.stage_one.frames
    if window is None:
        window = typical_clip_seconds(predictor.run)
        if window is None:
            raise UcfpipeError(
                f"the run's cache ({predictor.run.cache_directory}) is not reachable and the run does not "
                "record its typical clip duration; pass --window SECONDS (the length of the clips it was trained on)"
            )
    if not window > 0:
        raise UcfpipeError(f"--window must be a positive number of seconds, got {window}")
    return Rate(steps, float(window))


class StreamingFeaturiser:
    """The run's stage-one CNN and classifiers (an ensemble's members averaged) over a stream of frames.

    `featurise` runs sampled frames through the CNN in fixed-size batches (one compiled shape, whatever the
    number of frames); `push` keeps the last T features; `classify_ring` classifies them."""

    def __init__(self, predictor, batch_size: int | None = None):
        self.predictor = predictor
        self.steps = predictor.stage_one.frames
        self.size = predictor.stage_one.size
        self.classes = predictor.classes
        self.batch_size = batch_size or self.steps
        self.ring: deque = deque(maxlen=self.steps)
        self.frames_featurised = 0

    def prepare(self, frame_bgr: np.ndarray) -> np.ndarray:
        """A decoded BGR frame of any size -> the run's input: size x size RGB, resized as stage one did."""
        return resize_rgb(frame_bgr, self.size)

    def featurise(self, frames_rgb: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) uint8 RGB -> (n, ...) float32 features, rounded to the cache's dtype."""
        n = len(frames_rgb)
        batch = self.batch_size if n > 1 else 1  # one frame at a time (live) has its own, smallest shape
        out = []
        for first in range(0, n, batch):
            chunk = frames_rgb[first:first + batch]
            padded = chunk if len(chunk) == batch else np.concatenate(
                [chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
            out.append(self.predictor.featurise(padded)[:len(chunk)])
        self.frames_featurised += n
        return np.concatenate(out) if out else np.zeros((0,), np.float32)

    def classify(self, sequence: np.ndarray) -> np.ndarray:
        """One (T, ...) feature sequence -> class probabilities (classes,)."""
        return self.predictor.classify(sequence[None])[0]

    def warm_up(self) -> None:
        """Compile the one-frame CNN call and the classifier before the first frame arrives, so the first
        prediction's latency is a prediction's, not a compilation's."""
        feature = self.featurise(np.zeros((1, self.size, self.size, 3), np.uint8))[0]
        self.classify(np.stack([feature] * self.steps))
        self.frames_featurised -= 1

    def push(self, feature: np.ndarray) -> None:
        self.ring.append(feature)

    @property
    def ready(self) -> bool:
        return len(self.ring) == self.steps

    def classify_ring(self) -> np.ndarray:
        if not self.ready:
            raise RuntimeError(f"the ring holds {len(self.ring)} of {self.steps} features")
        return self.classify(np.stack(self.ring))
