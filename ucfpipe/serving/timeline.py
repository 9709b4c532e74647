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


def _band_svg(prediction, colours: dict, width: int = 900, height: int = 34) -> str:
    """The segments as one coloured band, each named by its <title> (hover) and, where it fits, in place."""
    from ucfpipe.core.html import escape

    names = list(prediction.classes)
    duration = max(prediction.duration, 1e-3)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" id="segments">']
    for start, end, name in prediction.segments():
        x, w = start / duration * width, max(1.0, (end - start) / duration * width)
        parts.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{colours[names.index(name)]}">'
                     f'<title>{escape(name)}: {start:.1f}–{end:.1f} s</title></rect>')
        if w >= 7 * (len(name) + 2):
            parts.append(f'<text x="{x + w / 2:.1f}" y="{height / 2 + 4:.1f}" font-size="11" fill="#fff" text-anchor="middle">'
                         f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def page(prediction, top: int) -> str:
    """report.html of a windowed prediction: the segments, the most likely classes over time, and each window
    with its keyframe and top-k; self-contained like a run's page (the kit: ucfpipe.core.html)."""
    from matplotlib.colors import to_hex

    from ucfpipe.serving.predictor import top_classes
    from ucfpipe.core.html import document, escape, line_chart

    top = min(top, len(prediction.classes))
    indices = plotted_classes(prediction)
    colours = {i: to_hex(plt.get_cmap("tab10")(n % 10)) for n, i in enumerate(indices)}
    names = list(prediction.classes)
    centres = [(w.start + w.end) / 2 for w in prediction.windows]
    lines = line_chart([(names[i], [float(w.probabilities[i]) for w in prediction.windows], colours[i]) for i in indices],
                       centres, "probability at window centres", y_range=(0.0, 1.0), width=900, height=260,
                       x_label="seconds")
    rows = []
    for number, window in enumerate(prediction.windows):
        keyframe = prediction.keyframes.get(number)
        image = f'<img alt="window {number + 1}" src="{keyframe}">' if keyframe else '<span class="note">no keyframe</span>'
        ranked = "".join(f"<li>{escape(name)} <span class=n>{p:.3f}</span></li>"
                         for name, p in top_classes(window.probabilities, prediction.classes, top))
        rows.append(f'<tr class="window"><td class=n>{number + 1}</td><td class=n>{window.start:.2f}–{window.end:.2f} s</td>'
                    f"<td>{image}</td><td><ol>{ranked}</ol></td></tr>")
    video = Path(prediction.video).name
    title = f"{video}: {len(prediction.windows)} windows"
    overall = "".join(f"<li>{escape(name)} <span class=n>{p:.3f}</span></li>"
                      for name, p in top_classes(prediction.probabilities, prediction.classes, top))
    body = (f"<h1>{escape(title)}</h1><p>{escape(prediction.video)}: {prediction.duration:.1f} s, "
            f"{len(prediction.windows)} windows of {prediction.windows[0].end - prediction.windows[0].start:.2f} s</p>"
            f"<h2>segments</h2>{_band_svg(prediction, {i: colours.get(i, '#888') for i in range(len(names))})}"
            f"<h2>over time</h2>{lines}<h2>whole video (mean over windows)</h2><ol>{overall}</ol>"
            f'<h2>windows</h2><table><tr><th class=n>#</th><th class=n>span</th><th>keyframe</th><th>top {top}</th></tr>'
            f'{"".join(rows)}</table>')
    return document(title, body, {"video": prediction.video})
