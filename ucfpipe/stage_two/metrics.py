"""Classification metrics of predicted probabilities, computed by scikit-learn rather than by hand."""

from __future__ import annotations

import warnings

import numpy as np


def classification_metrics(labels, probabilities, classes, num_pairs: int = 10) -> dict:
    """`labels` (N,) true class indices, `probabilities` (N, K) -> the figures papers report, per-class rows,
    the confusion matrix and the most confused class pairs.

    Macro averages and the mean class accuracy run over the classes that have test clips (all 101 on a full
    UCF-101 split): a class with no test clip has no accuracy to average. With 5 classes or fewer, top-5 is
    trivially 1 (`top5_k` records the k used)."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    labels, probabilities = _checked(labels, probabilities, len(classes))
    everything = np.arange(len(classes))
    present = np.unique(labels)
    predicted = probabilities.argmax(axis=1)
    k = min(5, len(classes))
    # sklearn scores two classes from the positive class's column alone.
    scores = probabilities[:, 1] if len(classes) == 2 else probabilities
    with warnings.catch_warnings():
        # "k >= n_classes gives a perfect score" and "y_pred has classes not in y_true" are expected here.
        warnings.simplefilter("ignore", UserWarning)
        top = top_k_accuracy_score(labels, scores, k=k, labels=everything)
        mean_class_accuracy = balanced_accuracy_score(labels, predicted)
    per_class = precision_recall_fscore_support(labels, predicted, labels=everything, zero_division=0)
    macro_precision, macro_recall, macro_f1, _ = precision_recall_fscore_support(
        labels, predicted, labels=present, average="macro", zero_division=0
    )
    matrix = confusion_matrix(labels, predicted, labels=everything)
    return {
        "top1": float(accuracy_score(labels, predicted)),
        "top5": float(top),
        "top5_k": k,
        "mean_class_accuracy": float(mean_class_accuracy),
        "macro_precision": float(macro_precision),
        "macro_recall": float(macro_recall),
        "macro_f1": float(macro_f1),
        "num_classes_scored": int(len(present)),
        "per_class": _per_class_rows(classes, *per_class),
        "confusion": matrix,
        "most_confused": most_confused_pairs(matrix, classes, num_pairs),
    }


def _checked(labels, probabilities, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), num_classes):
        raise ValueError(f"probabilities must be ({len(labels)}, {num_classes}), got {probabilities.shape}")
    if not len(labels):
        raise ValueError("no predictions to score")
    return labels, probabilities


def _per_class_rows(classes, precision, recall, f1, support) -> list[dict]:
    return [
        {
            "class": name,
            "accuracy": float(recall[i]),  # a class's accuracy is the recall of its clips
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]


def most_confused_pairs(matrix: np.ndarray, classes, count: int = 10) -> list[dict]:
    """Off-diagonal cells with the most clips: (true class, predicted class, clips, share of the true class)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off)
    order = sorted(zip(rows, cols), key=lambda rc: (-off[rc], rc))[:count]
    return [
        {
            "true": classes[r],
            "predicted": classes[c],
            "clips": int(off[r, c]),
            "share_of_true": float(off[r, c] / matrix[r].sum()),
        }
        for r, c in order
    ]


def top_k(metrics: dict, classes=None) -> int:
    """The k of a metrics.json's "top5" figure (min(5, classes)): recorded as "top5_k" since eval records it;
    for older files, from the run's classes when known, else 5."""
    return int(metrics.get("top5_k") or (min(5, len(classes)) if classes else 5))


def top_k_title(ks) -> str:
    """'top-5', or 'top-4/5' for runs of different k side by side."""
    return "top-" + "/".join(str(k) for k in sorted(set(ks)))
