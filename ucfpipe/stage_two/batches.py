"""Batches of cached clips for Keras: from memory when the features fit, streamed from the cache otherwise.

Both are one `keras.utils.PyDataset` (no TensorFlow-only input code), so every backend reads them the same
way. Features stay in their stored dtype (float16) in memory and become float32 one batch at a time.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ucfpipe.cache.store import FeatureStore


def feature_bytes(store: FeatureStore, num_clips: int) -> int:
    """Memory the features of `num_clips` clips take in their stored dtype."""
    per_clip = store.num_steps * math.prod(store.feature_shape) * np.dtype(store.settings["dtype"]).itemsize
    return num_clips * per_clip


class InMemory:
    """Clips already read into an (N, T, *F) array, or with `multiview` an (N, V, T, *F) one of V views."""

    def __init__(self, features: np.ndarray, multiview: bool = False):
        self.features = features
        self.multiview = multiview

    @property
    def num_views(self) -> int:
        return self.features.shape[1] if self.multiview else 1

    def __len__(self) -> int:
        return len(self.features)

    def read(self, rows: np.ndarray, views: np.ndarray | None = None) -> np.ndarray:
        """The clips `rows`; of a multi-view source, view `views[i]` of row i (the first view when None)."""
        if not self.multiview:
            return self.features[rows]
        rows = np.asarray(rows)
        choice = np.zeros(len(rows), np.int64) if views is None else np.asarray(views)
        return self.features[rows, choice]


class FromStore:
    """Clips read from the cache batch by batch: memory stays at one batch whatever the cache's size."""

    def __init__(self, store: FeatureStore, video_ids: list[str], views: list[int] | None = None, view: int = 0):
        self.store = store
        self.video_ids = list(video_ids)
        self.views = list(views) if views is not None and len(views) > 1 else None  # store view indices
        self.view = view if self.views is None else self.views[0]

    @property
    def num_views(self) -> int:
        return len(self.views) if self.views else 1

    def __len__(self) -> int:
        return len(self.video_ids)

    def read(self, rows: np.ndarray, views: np.ndarray | None = None) -> np.ndarray:
        ids = [self.video_ids[r] for r in rows]
        if self.views is None or views is None:
            return self.store.features(ids, view=self.view)
        choice = np.asarray(views)
        out = None
        for position in np.unique(choice):
            where = np.flatnonzero(choice == position)
            part = self.store.features([ids[i] for i in where], view=self.views[int(position)])
            if out is None:
                out = np.empty((len(ids), *part.shape[1:]), part.dtype)
            out[where] = part
        return out


def load_source(store: FeatureStore, video_ids: list[str], in_memory: bool, chunk: int = 512,
                views: list[int] | None = None, view: int = 0):
    """Clips of one view (`view`, a store view index), or with several `views` a source that serves any of
    them per clip (`read(rows, views)`; position 0 of `views` when none is asked for)."""
    multiview = views is not None and len(views) > 1
    if not in_memory:
        return FromStore(store, video_ids, views if multiview else None, view)
    if multiview:
        parts = [store.features(video_ids[i : i + chunk], view=None)[:, list(views)] for i in range(0, len(video_ids), chunk)]
        if not parts:
            return InMemory(np.empty((0, len(views), store.num_steps, *store.feature_shape), store.settings["dtype"]), True)
        return InMemory(np.concatenate(parts), True)
    parts = [store.features(video_ids[i : i + chunk], view=view) for i in range(0, len(video_ids), chunk)]
    if not parts:
        return InMemory(np.empty((0, store.num_steps, *store.feature_shape), store.settings["dtype"]))
    return InMemory(np.concatenate(parts))


def temporal_indices(rng: np.random.Generator, num_clips: int, num_steps: int, time_jitter: float,
                     step_drop: float) -> np.ndarray:
    """(n, T) step indices of feature-level temporal augmentation: each step is replaced by a neighbour
    with probability `time_jitter`, then dropped (the previous kept step repeated) with probability
    `step_drop`. The first step is never dropped. Both 0: the identity."""
    steps = np.broadcast_to(np.arange(num_steps), (num_clips, num_steps))
    index = steps.copy()
    if time_jitter > 0 and num_steps > 1:
        jitter = rng.random((num_clips, num_steps)) < time_jitter
        direction = np.where(rng.random((num_clips, num_steps)) < 0.5, -1, 1)
        index = np.clip(index + jitter * direction, 0, num_steps - 1)
    if step_drop > 0 and num_steps > 1:
        keep = rng.random((num_clips, num_steps)) >= step_drop
        keep[:, 0] = True
        source = np.maximum.accumulate(np.where(keep, steps, 0), axis=1)
        index = np.take_along_axis(index, source, axis=1)
    return index


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
                 shuffle_seed: int | None = None, first_pass: int = 0, random_views: bool = False,
                 time_jitter: float = 0.0, step_drop: float = 0.0, multiple_of: int = 1, pad_weighting: str = "step"):
        """With `random_views` (and a multi-view source), each pass draws one stored view per clip; with
        `time_jitter`/`step_drop`, steps are perturbed (see `temporal_indices`). All of it, like the order,
        is a function of (shuffle_seed, pass) only, so augmentation needs a `shuffle_seed`.

        With `multiple_of` > 1 (data parallelism over that many devices), every batch comes with sample
        weights and a short last batch is filled up to a multiple of it (see `_pad`); `pad_weighting` says
        what stays exact: "step" each step's loss and gradient (training), "pass" the mean loss and
        accuracy over the whole pass (validation)."""
        super().__init__(workers=1, use_multiprocessing=False)
        if pad_weighting not in ("step", "pass"):
            raise ValueError(f"pad_weighting must be 'step' or 'pass', got {pad_weighting!r}")
        if batch_size % multiple_of:
            raise ValueError(f"batch_size {batch_size} is not a multiple of multiple_of {multiple_of}")
        self.multiple_of = multiple_of
        self.pad_weighting = pad_weighting
        augment = random_views or time_jitter > 0 or step_drop > 0
        if augment and shuffle_seed is None:
            raise ValueError("augmentation needs a shuffle_seed (it must be reproducible)")
        self.random_views = random_views and getattr(source, "num_views", 1) > 1
        self.time_jitter = time_jitter
        self.step_drop = step_drop
        self._views = None
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
            if self.random_views:  # its own stream: the order stays what it was without augmentation
                self._views = np.random.default_rng([self.shuffle_seed, self._pass, 1]).integers(
                    self.source.num_views, size=len(self.source))
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if self._views is not None:
            features = self.source.read(rows, self._views[rows])
        else:
            features = self.source.read(rows)
        features = features.astype(np.float32)
        if self.time_jitter > 0 or self.step_drop > 0:
            rng = np.random.default_rng([self.shuffle_seed, self._pass, 2, index])
            steps = temporal_indices(rng, len(features), features.shape[1], self.time_jitter, self.step_drop)
            features = features[np.arange(len(features))[:, None], steps]
        if self.labels is None:
            return (features,)
        labels = keras.utils.to_categorical(self.labels[rows], self.num_classes).astype(np.float32)
        if self.multiple_of > 1:
            return self._pad(features, labels)
        return features, labels

    def padding(self) -> int:
        """Rows the last batch is filled up with (full batches are multiples of `multiple_of` already)."""
        return -len(self.source) % self.multiple_of

    def _pad(self, features: np.ndarray, labels: np.ndarray):
        """(features, labels, weights) with rows added at weight 0 (copies of the first clip) up to a multiple
        of `multiple_of`. Keras divides a batch's summed loss by its row count, padding included, and weights
        its metrics by row weights, so the real rows are weighted up: by padded/real rows of this batch for
        "step" (a step's gradient is its real clips' mean, as on one device), or by padded/real rows of the
        whole pass for "pass" (the pass's mean loss and accuracy are its real clips')."""
        real = len(features)
        extra = -real % self.multiple_of
        if self.pad_weighting == "step":
            weight = (real + extra) / real
        else:
            weight = (len(self.source) + self.padding()) / len(self.source)
        weights = np.concatenate([np.full(real, weight, np.float32), np.zeros(extra, np.float32)])
        if extra:
            features = np.concatenate([features, np.repeat(features[:1], extra, axis=0)])
            labels = np.concatenate([labels, np.repeat(labels[:1], extra, axis=0)])
        return features, labels, weights
