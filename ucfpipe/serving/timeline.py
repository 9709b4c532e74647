"""timeline.png of a windowed prediction: what the video shows when, readable at a glance.

Top band: the predicted segments (the smoothed per-second labels), one colour per class, named in place.
Below: the probability of the most likely classes over time, one line each (window centres), so a reader
sees how sure each segment is and where two classes compete. Matplotlib without a display (Agg).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ucfpipe.core.files import replacing  # noqa: E402

MAX_LINES = 5  # classes drawn as lines; more would not be readable
CHARACTERS_ACROSS = 130  # bold 9-point characters across the 12-inch band
TICK_STEPS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200)  # seconds between labelled ticks on long videos


def _clock(seconds: float, _=None) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def plotted_classes(prediction) -> list[int]:
    """Every class some segment shows, then the most probable others, up to MAX_LINES (at least the segments)."""
    names = list(prediction.classes)
    shown = list(dict.fromkeys(names.index(c) for _, _, c in prediction.segments()))
    by_mean = np.argsort(-prediction.probabilities, kind="stable").tolist()
    return shown + [i for i in by_mean if i not in shown][:max(0, MAX_LINES - len(shown))]


def plot_timeline(prediction, path: Path) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    indices = plotted_classes(prediction)
    colours = {i: plt.get_cmap("tab10")(n % 10) for n, i in enumerate(indices)}
    segments = prediction.segments()
    figure, (band, lines) = plt.subplots(2, 1, figsize=(12, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 4]})
    names = list(prediction.classes)
    for start, end, name in segments:
        colour = colours[names.index(name)]
        band.axvspan(start, end, color=colour, alpha=0.85, lw=0)
        lines.axvspan(start, end, color=colour, alpha=0.12, lw=0)
        if (end - start) / prediction.duration * CHARACTERS_ACROSS >= len(name) + 2:  # named where the name fits
            band.text((start + end) / 2, 0.5, name, ha="center", va="center", fontsize=9, color="white", weight="bold", clip_on=True)
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center")
    band.set_title(f"{Path(prediction.video).name}: {len(prediction.windows)} windows of "
                   f"{prediction.windows[0].end - prediction.windows[0].start:.2f} s, {len(segments)} segments", fontsize=10)
    centres = np.array([(w.start + w.end) / 2 for w in prediction.windows])
    probabilities = np.stack([w.probabilities for w in prediction.windows])
    for i in indices:
        lines.plot(centres, probabilities[:, i], color=colours[i], lw=1.6, marker="." if len(centres) < 60 else None,
                   label=names[i])
    lines.set_ylim(0, 1.02)
    lines.set_xlim(0, max(prediction.duration, 1e-3))
    lines.set_ylabel("probability")
    if prediction.duration >= 120:
        step = next((s for s in TICK_STEPS if prediction.duration / s <= 12), TICK_STEPS[-1])
        lines.xaxis.set_major_locator(MultipleLocator(step))
        lines.xaxis.set_major_formatter(FuncFormatter(_clock))
        lines.set_xlabel("time (m:ss); lines at window centres")
    else:
        lines.set_xlabel("time (s); lines at window centres")
    lines.grid(alpha=0.3)
    lines.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=9, frameon=False)
    figure.tight_layout()
    try:
        with replacing(path, durable=False) as tmp:
            figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(figure)
