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
    labels, properties, numbered = drawable_labels(classes)
    axis.set_xticks(range(k), labels, rotation=90, fontsize=font, fontproperties=properties)
    axis.set_yticks(range(k), labels, fontsize=font, fontproperties=properties)
    if numbered:
        figure.text(0.01, 0.005, "#n: class n of per_class.csv (no installed font draws its name)", fontsize=8)
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


def _characters(path: str) -> frozenset:
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError):  # a font file FreeType cannot read covers nothing
        return frozenset()


_CHARACTERS: dict[str, frozenset] = {}


def _covers(path: str, needed: set[int]) -> bool:
    if path not in _CHARACTERS:
        _CHARACTERS[path] = _characters(path)
    return needed <= _CHARACTERS[path]


def drawable_labels(names: list[str]):
    """(labels, font properties or None, whether some are numbered) such that every label draws without a
    missing glyph (matplotlib draws a box and warns): the names in the default font if it has their glyphs
    (UCF-101's do), else in an installed font that has them all (e.g. Noto CJK for Chinese class names), else
    each name the default font cannot draw as #n, its row in per_class.csv."""
    from matplotlib import font_manager

    def needed(name: str) -> set[int]:
        return {ord(c) for c in name if not c.isspace()}

    default = font_manager.findfont(font_manager.FontProperties())
    everything = set().union(*map(needed, names)) if names else set()
    if _covers(default, everything):
        return list(names), None, False
    for entry in font_manager.fontManager.ttflist:
        # Last Resort has every character, each drawn as a box naming its Unicode block: no name is legible.
        if not entry.name.startswith("Last Resort") and _covers(entry.fname, everything):
            return list(names), font_manager.FontProperties(fname=entry.fname), False
    labels = [name if _covers(default, needed(name)) else f"#{n}" for n, name in enumerate(names, 1)]
    return labels, None, True


# -- TensorBoard: the one TensorFlow-only corner of stage two ------------------------------------------------
TENSORBOARD = "tensorboard"  # under the run: train/, validation/ (per epoch), test/ (eval); `tensorboard --logdir runs`


class TensorBoardLog:
    """tf.summary writers under RUN/tensorboard/: per epoch loss and accuracy in train/ and validation/ (the same
    tags, so TensorBoard draws them on one chart, as Keras' own callback does) and the learning rate; eval adds
    the test metrics as scalars and the confusion matrix as an image in test/. Event files are appended to; a
    resumed run adds a new one, and TensorBoard reads them in order. test/ holds the last eval's alone."""

    def __init__(self, directory: Path, log=print):
        import tensorflow as tf

        self._tf = tf
        self.root = Path(directory) / TENSORBOARD
        self.log = log
        self.stopped = False
        self._writers: dict = {}

    def _writer(self, name: str):
        if name not in self._writers:
            self._writers[name] = self._tf.summary.create_file_writer(str(self.root / name))
        return self._writers[name]

    def _scalars(self, name: str, values: dict, step: int) -> None:
        with self._writer(name).as_default(step=int(step)):
            for tag, value in values.items():
                if value is not None:
                    self._tf.summary.scalar(tag, float(value))

    def _guarded(self, write) -> None:
        """Logs are a view of what history.csv and metrics.json hold: a failure to write them (a full disk, a
        directory gone) stops the logs with one line, never the training or the evaluation."""
        if self.stopped:
            return
        try:
            write()
        except Exception as err:  # TensorFlow raises several types for one I/O failure
            self.stopped = True
            self.log(f"TensorBoard logs stopped: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")

    def epoch(self, number: int, row: dict, learning_rate: float | None = None) -> None:
        self._guarded(lambda: self._epoch(number, row, learning_rate))

    def _epoch(self, number: int, row: dict, learning_rate: float | None) -> None:
        self._scalars("train", {"epoch_loss": row.get("loss"), "epoch_accuracy": row.get("accuracy"),
                                "epoch_learning_rate": learning_rate}, number)
        self._scalars("validation", {"epoch_loss": row.get("val_loss"), "epoch_accuracy": row.get("val_accuracy")}, number)
        self.flush()

    def evaluation(self, step: int, metrics: dict, confusion_png: Path | None = None) -> None:
        self._guarded(lambda: self._evaluation(step, metrics, confusion_png))

    def _evaluation(self, step: int, metrics: dict, confusion_png: Path | None) -> None:
        keys = ("top1", "top5", "mean_class_accuracy", "macro_precision", "macro_recall", "macro_f1", "order_blind_top1")
        tta = metrics.get("tta", {})

        def tag(key: str, figures: dict) -> str:  # top-5 under the k it used: a 4-class run's is top-4
            return f"top{figures.get('top5_k', 5)}" if key == "top5" else key

        scalars = {f"test/{tag(k, metrics)}": metrics.get(k) for k in keys}
        scalars.update({f"test/tta_{tag(k, tta)}": tta.get(k) for k in ("top1", "top5", "mean_class_accuracy")})
        self._forget("test")
        self._scalars("test", scalars, step)
        if confusion_png is not None and Path(confusion_png).is_file():
            image = self._tf.io.decode_png(Path(confusion_png).read_bytes(), channels=3)
            with self._writer("test").as_default(step=int(step)):
                self._tf.summary.image("confusion_matrix", image[None], max_outputs=1)
        self.flush()

    def _forget(self, name: str) -> None:
        """Remove what an earlier eval wrote into `name`/: each eval's figures replace the last one's whole (event
        files are appended to, so a figure this eval does not write, such as the order-blind top-1 of an eval
        with --baseline, would otherwise still show as current)."""
        if name not in self._writers:
            for path in (self.root / name).glob("events.out.tfevents.*"):
                path.unlink()

    def flush(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        writers, self._writers = list(self._writers.values()), {}
        for writer in writers:
            self._guarded(writer.close)

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tensorboard_log(directory: Path, log=print, backend: str | None = None) -> TensorBoardLog | None:
    """The run's TensorBoard log, or None with one line saying why none is written: the Keras backend is not
    TensorFlow (tf.summary is TensorFlow's), or the tensorboard package that implements tf.summary is missing."""
    import importlib.util

    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend != "tensorflow":
        log(f"no TensorBoard logs: the Keras backend is {backend}, and TensorBoard's writer needs TensorFlow")
        return None
    if importlib.util.find_spec("tensorboard") is None:
        log("no TensorBoard logs: the tensorboard package is not installed (pip install tensorboard)")
        return None
    return TensorBoardLog(directory, log=log)
