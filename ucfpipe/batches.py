"""Batches of cached clips for Keras: from memory when the features fit, streamed from the cache otherwise.

Both are one `keras.utils.PyDataset` (no TensorFlow-only input code), so every backend reads them the same
way. Features stay in their stored dtype (float16) in memory and become float32 one batch at a time.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from .features import FeatureStore


def feature_bytes(store: FeatureStore, num_clips: int) -> int:
    """Memory the features of `num_clips` clips take in their stored dtype."""
    per_clip = store.num_steps * math.prod(store.feature_shape) * np.dtype(store.settings["dtype"]).itemsize
    return num_clips * per_clip


class InMemory:
    """Clips already read into an (N, T, *F) array."""

    def __init__(self, features: np.ndarray):
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.features[rows]


class FromStore:
    """Clips read from the cache batch by batch: memory stays at one batch whatever the cache's size."""

    def __init__(self, store: FeatureStore, video_ids: list[str]):
        self.store = store
        self.video_ids = list(video_ids)

    def __len__(self) -> int:
        return len(self.video_ids)

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.store.features([self.video_ids[r] for r in rows])


def load_source(store: FeatureStore, video_ids: list[str], in_memory: bool, chunk: int = 512):
    if not in_memory:
        return FromStore(store, video_ids)
    parts = [store.features(video_ids[i : i + chunk]) for i in range(0, len(video_ids), chunk)]
    if not parts:
        return InMemory(np.empty((0, store.num_steps, *store.feature_shape), store.settings["dtype"]))
    return InMemory(np.concatenate(parts))


def iterate_features(source, chunk: int = 256):
    """(n, T, *F) float arrays of every clip of `source`, in order."""
    for start in range(0, len(source), chunk):
        yield source.read(np.arange(start, min(start + chunk, len(source))))


class ClipBatches(keras.utils.PyDataset):
    """(features float32, one-hot labels) batches; with a `shuffle_seed`, a new order on every pass.

    The order of pass p is a function of (shuffle_seed, p) only, so training is reproducible. A pass begins
    whenever batch 0 is asked for, rather than in `on_epoch_end`: with workers=1 Keras asks for batches in
    order, but the TensorFlow backend prefetches the next epoch's first batches before it signals the end of
    the current one. Passes are counted from `first_pass` (a resumed run starts from its epoch)."""

    def __init__(self, source, labels: np.ndarray | None, num_classes: int, batch_size: int,
                 shuffle_seed: int | None = None, first_pass: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.source = source
        self.labels = None if labels is None else np.asarray(labels)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self._pass = first_pass - 1
        self._order = np.arange(len(source))

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def __getitem__(self, index: int):
        if index == 0 and self.shuffle_seed is not None:
            self._pass += 1
            self._order = np.random.default_rng([self.shuffle_seed, self._pass]).permutation(len(self.source))
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        features = self.source.read(rows).astype(np.float32)
        if self.labels is None:
            return (features,)
        return features, keras.utils.to_categorical(self.labels[rows], self.num_classes).astype(np.float32)
