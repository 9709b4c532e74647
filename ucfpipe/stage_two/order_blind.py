"""An order-blind reference: logistic regression on each clip's features averaged over time.

Averaging over the T steps throws away their order, so the gap between this and the LSTM is what the
sequence model gets from temporal order (on the synthetic set, whose classes are time-reversed pairs, the
whole of it). Fitted on the same training clips, scored on the same test clips."""

from __future__ import annotations

import numpy as np

from ucfpipe.cache.store import FeatureStore
from ucfpipe.stage_two.batches import iterate_features, load_source


def time_averaged(store: FeatureStore, video_ids: list[str]) -> np.ndarray:
    """(N, D): every clip's steps averaged, spatial maps flattened; read in chunks, never all clips at once."""
    parts = [chunk.astype(np.float32).mean(axis=1).reshape(len(chunk), -1)
             for chunk in iterate_features(load_source(store, video_ids, in_memory=False))]
    return np.concatenate(parts) if parts else np.empty((0, int(np.prod(store.feature_shape))), np.float32)


def order_blind_top1(store: FeatureStore, train_ids, train_labels, test_ids, test_labels, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, random_state=seed))
    classifier.fit(time_averaged(store, list(train_ids)), np.asarray(train_labels))
    return float(classifier.score(time_averaged(store, list(test_ids)), np.asarray(test_labels)))
