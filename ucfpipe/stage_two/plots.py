"""Figures of a run: training curves and the confusion matrix. Matplotlib without a display (Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(figure, path: Path) -> None:
    from ucfpipe.core.files import replacing

    try:
        with replacing(path, durable=False) as tmp:  # a figure is made again by rerunning
            figure.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    finally:
        plt.close(figure)


def plot_curves(history: list[dict], path: Path, best_epoch: int | None = None, monitor: str = "") -> None:
    """Loss and accuracy per epoch, training and validation side by side."""
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric) for row in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, style, marker=".", label=("validation " if prefix else "train ") + metric)
        if best_epoch is not None:
            axis.axvline(best_epoch, color="grey", linewidth=0.8, label=f"best epoch ({monitor})")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    _save(figure, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """Row-normalised (each true class sums to 1, so rare and common classes read alike). Sized by the
    number of classes, so that all 101 of UCF-101 keep a legible name on each axis."""
    counts = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, counts, out=np.zeros(matrix.shape, float), where=counts > 0)
    k = len(classes)
    side = max(5.0, 0.16 * k + 2.0)
    font = 10 if k <= 20 else 7 if k <= 50 else 4.5
    figure, axis = plt.subplots(figsize=(side + 1.0, side))
    # A square-root colour scale: a class confused 5% of the time is still visible next to the diagonal.
    scale = matplotlib.colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = axis.imshow(normalised, cmap="Blues", norm=scale, interpolation="nearest")
    axis.set_xticks(range(k), classes, rotation=90, fontsize=font)
    axis.set_yticks(range(k), classes, fontsize=font)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if k <= 20:  # room for the numbers themselves
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.3 else "black"
                    axis.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=font - 2, color=colour)
    axis.set_title(title or "confusion matrix (rows sum to 1)")
    figure.colorbar(image, ax=axis, fraction=0.04, pad=0.02)
    _save(figure, path)
