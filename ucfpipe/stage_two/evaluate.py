"""Stage two, evaluation: a run's best model on its split's test list -> metrics.json, per_class.csv,
confusion.png, predictions.csv, test_clips.json (what the page needs) and report.html in the run directory;
with TensorFlow, the metrics and the confusion matrix also go to the run's TensorBoard logs.

The test clips come from the split files (the run records which folder; `--splits` overrides it) and their
features from a cache that must carry the fingerprint the run was trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.core import files
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import backbones
from ucfpipe.stage_two import runs
from ucfpipe.stage_two.batches import ClipBatches, feature_bytes, load_source


def _test_clips(split: datasets.Split, store: FeatureStore, allow_missing: bool):
    missing = [c.video_id for c in split.test if c.video_id not in store]
    if split.test and len(missing) == len(split.test):  # --allow-missing would score nothing: not worth suggesting
        raise UcfpipeError(
            f"none of the {len(split.test)} test clips of split {split.number} is in the feature cache {store.directory} "
            f"(e.g. {missing[0]}); extract them into it, or pass --features with the cache that holds them"
        )
    if missing and not allow_missing:
        raise UcfpipeError(
            f"{len(missing)} of {len(split.test)} test clips of split {split.number} are not in the feature cache "
            f"{store.directory} (e.g. {missing[0]}); extract them, or pass --allow-missing to score the "
            f"{len(split.test) - len(missing)} present (metrics.json records how many were not evaluated)"
        )
    clips = [c for c in split.test if c.video_id in store]
    if not clips:
        raise UcfpipeError(f"split {split.number} lists no test clips; check its test list in the splits folder")
    return clips, missing


def predict_probabilities(model, store: FeatureStore, video_ids: list[str], batch_size: int, memory_limit_gb: float,
                          view: int = 0):
    """(N, K) class probabilities of one stored view of the clips (default the first, plain centre view)."""
    in_memory = feature_bytes(store, len(video_ids)) <= memory_limit_gb * 2**30
    batches = ClipBatches(load_source(store, video_ids, in_memory, view=view), None, 0, batch_size)
    return np.asarray(model.predict(batches, verbose=0), dtype=np.float64)


def tta_probabilities(model, store: FeatureStore, video_ids: list[str], batch_size: int, memory_limit_gb: float):
    """(N, K) test-time augmentation: class probabilities averaged over every stored view of each clip."""
    views = [predict_probabilities(model, store, video_ids, batch_size, memory_limit_gb, view=v) for v in range(len(store.views))]
    return np.mean(views, axis=0)


def _headline(labels, probabilities, classes) -> dict:
    from ucfpipe.stage_two.metrics import classification_metrics

    scores = classification_metrics(labels, probabilities, list(classes))
    return {k: scores[k] for k in ("top1", "top5", "top5_k", "mean_class_accuracy")}


def run(run_dir: str | Path, features: str | None = None, splits: str | None = None,
        allow_missing: bool | None = None, baseline: bool = False, tta: bool = False, log=print) -> dict:
    """Score the run's best model on its split's test clips; with `baseline`, also an order-blind reference
    fitted on the run's training clips (see ucfpipe.stage_two.order_blind); with `tta`, also the probabilities averaged over
    every stored view (metrics["tta"]). `run_dir` may be an ensemble (ucfpipe.stage_two.ensemble): its figures are
    those of the mean of its members' probabilities, metrics["members"] holds each member's."""
    directory = Path(run_dir)
    if not directory.is_dir():
        runs.Run(directory)  # says what a run directory is
    # Outputs go into the run: one writer at a time (a train or another eval there is refused).
    with runs.lock_run(directory):
        return _run(directory, features, splits, allow_missing, baseline, tta, log)


def _run(directory: Path, features, splits, allow_missing, baseline, tta, log) -> dict:
    from ucfpipe.stage_two import ensemble

    members = ensemble.load_run_or_ensemble(directory)
    run = members[0]
    store = _open_cache(members, features)
    splits_dir = run.splits_dir(splits)
    split = _read_split(run, store, splits_dir)
    allow = run.config.allow_missing if allow_missing is None else allow_missing
    clips, missing = _test_clips(split, store, allow)
    if tta and len(store.views) == 1:
        log(f"warning: {store.directory} stores only the centre view, so --tta equals the plain evaluation; "
            "extract with --views flip,crops,time for more")
    video_ids = [c.video_id for c in clips]
    labels = np.array([c.label for c in clips])
    probabilities, augmented, member_figures = _score(members, store, video_ids, labels, tta)

    is_ensemble = len(members) > 1 or ensemble.is_ensemble(directory)
    metrics, per_class, confusion = _metrics(members, is_ensemble, labels, probabilities, split, splits_dir, store, allow, missing)
    if tta:
        metrics["tta"] = {**_headline(labels, augmented, run.classes), "views": list(store.views)}
    if is_ensemble:
        metrics["ensemble"] = {"members": [m.directory.name for m in members], "combine": "mean of member probabilities"}
        metrics["members"] = member_figures
    if baseline:
        metrics["order_blind_top1"] = order_blind_top1_of(run, store, video_ids)
    what = f"ensemble of {len(members)}" if is_ensemble else f"split {split.number}"
    _write_outputs(directory, run.classes, metrics, per_class, confusion, video_ids, labels, probabilities, what)
    _write_page_data(directory, store, clips, labels, probabilities)
    _print_summary(metrics, directory, log)
    _write_page(directory, log)
    _log_to_tensorboard(directory, metrics, members, log)
    return metrics


def _open_cache(members: list[runs.Run], features: str | None) -> FeatureStore:
    """The cache the run was trained on (or `features`), refused unless every member was trained on its numbers."""
    store = FeatureStore(members[0].features_dir(features))
    for member in members:
        member.check_cache(store)
    return store


def _read_split(run: runs.Run, store: FeatureStore, splits_dir: Path) -> datasets.Split:
    split = datasets.read_split(datasets.of_cache(store.config), splits_dir, run.split)
    if split.classes != run.classes:
        raise UcfpipeError(
            f"classInd.txt in {splits_dir} lists other classes than {run.directory} was trained on "
            f"({len(split.classes)} vs {len(run.classes)}); pass the --splits folder of the training run"
        )
    return split


def _score(members: list[runs.Run], store: FeatureStore, video_ids: list[str], labels, tta: bool):
    """(mean of the members' centre-view probabilities, mean of their TTA probabilities or None, each member's
    headline figures)."""
    classes = members[0].classes
    single, augmented, member_figures = [], [], {}
    for member in members:
        model = member.load_model()
        center = predict_probabilities(model, store, video_ids, member.config.batch_size, member.config.memory_limit_gb)
        single.append(center)
        figures = _headline(labels, center, classes)
        if tta:
            augmented.append(tta_probabilities(model, store, video_ids, member.config.batch_size, member.config.memory_limit_gb))
            figures["tta"] = _headline(labels, augmented[-1], classes)
        member_figures[member.directory.name] = figures
    return np.mean(single, axis=0), (np.mean(augmented, axis=0) if tta else None), member_figures


def _metrics(members, is_ensemble, labels, probabilities, split, splits_dir, store, allow, missing):
    """(metrics.json's figures and provenance, the per-class rows, the confusion matrix)."""
    from ucfpipe.stage_two.metrics import classification_metrics

    run = members[0]
    scores = classification_metrics(labels, probabilities, list(run.classes))
    per_class = scores.pop("per_class")
    confusion = scores.pop("confusion")

    def each(value_of):  # one value for a run, a list (one per member) for an ensemble
        return [value_of(m) for m in members] if is_ensemble else value_of(run)

    metrics = {
        **scores,
        "num_test_clips": len(labels),
        "num_test_listed": len(split.test),
        "num_not_evaluated": len(missing),
        "not_evaluated": missing,
        "allow_missing": bool(allow),
        "split": split.number,
        "dataset": split.dataset,
        "backbone": store.config.get("backbone", backbones.DEFAULT),  # caches made before backbones existed are VGG16's
        "splits_dir": str(Path(splits_dir).resolve()),
        "features": str(store.directory.resolve()),
        "fingerprint": store.fingerprint,
        "model": each(lambda m: str(m.path(runs.MODEL).resolve())),
        "config": each(lambda m: str(m.path(runs.CONFIG).resolve())),
        "best_epoch": each(lambda m: m.best_epoch),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return metrics, per_class, confusion


def order_blind_top1_of(run: runs.Run, store: FeatureStore, test_ids: list[str]) -> float:
    """The order-blind reference for `run`: fitted on its training and validation clips, scored on `test_ids`."""
    from ucfpipe.stage_two.order_blind import order_blind_top1

    clip_ids = run.clip_ids
    train_ids = clip_ids["train"] + clip_ids["val"]
    return order_blind_top1(store, train_ids, store.labels(train_ids), test_ids, store.labels(test_ids), seed=run.config.seed)


def _write_outputs(directory: Path, classes, metrics, per_class, confusion, video_ids, labels, probabilities, what) -> None:
    from ucfpipe.stage_two.plots import plot_confusion

    files.write_json(directory / runs.METRICS, metrics)
    files.write_csv(
        directory / runs.PER_CLASS, ["class", "accuracy", "precision", "recall", "f1", "support"],
        [[r["class"], f"{r['accuracy']:.4f}", f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"]]
         for r in per_class],
    )
    predicted = probabilities.argmax(axis=1)
    files.write_csv(
        directory / runs.PREDICTIONS, ["video_id", "true", "predicted", "probability"],
        [[v, classes[t], classes[p], f"{probabilities[i, p]:.4f}"] for i, (v, t, p) in enumerate(zip(video_ids, labels, predicted))],
    )
    plot_confusion(confusion, list(classes), directory / runs.CONFUSION,
                   title=f"{what}: top-1 {metrics['top1']:.3f}, {len(video_ids)} test clips (rows sum to 1)")


def _write_page_data(directory: Path, store: FeatureStore, clips, labels, probabilities, top: int = 3) -> None:
    """test_clips.json: per test clip its video (relative to the videos folder), true class, top-3, the frame
    indices stage one sampled (centre view) and the video file they came from (size, mtime, content digest),
    so a page can show what the model saw without the model, and say when a video changed since."""
    from dataclasses import asdict

    from ucfpipe.stage_two.report_page import CLIPS_FILE, CLIPS_FORMAT

    videos = store.recorded_path("videos")
    frames = store.frame_indices([c.video_id for c in clips])
    sources = store.sources()
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]
    files.write_json(directory / CLIPS_FILE, {
        "format": CLIPS_FORMAT,
        "videos": str(videos) if videos else "",
        "clips": [{"id": c.video_id, "video": c.video_id + c.extension, "true": int(label),
                   "top": [[int(k), round(float(probabilities[i, k]), 6)] for k in order[i]],
                   "frames": [int(f) for f in frames[i]],
                   **({"source": asdict(sources[c.video_id])} if sources.get(c.video_id) else {})}
                  for i, (c, label) in enumerate(zip(clips, labels))],
    })


def _write_page(directory: Path, log) -> None:
    from ucfpipe.stage_two import report_page

    log(report_page.write([directory], directory / report_page.PAGE, log=log) + ": open it in a browser")


def _log_to_tensorboard(directory: Path, metrics: dict, members, log) -> None:
    from ucfpipe.stage_two.plots import tensorboard_log

    board = tensorboard_log(directory, log=log)
    if board is None:
        return
    best = metrics["best_epoch"]
    with board:
        board.evaluation(best if isinstance(best, int) else 0, metrics, directory / runs.CONFUSION)


def _print_summary(metrics: dict, directory: Path, log) -> None:
    log(f"split {metrics['split']}: {metrics['num_test_clips']} test clips"
        + (f" ({metrics['num_not_evaluated']} listed clips not in the cache, not evaluated)" if metrics["num_not_evaluated"] else ""))
    for name, label in (("top1", "top-1 accuracy"), ("top5", f"top-{metrics['top5_k']} accuracy"),
                        ("mean_class_accuracy", "mean class accuracy"), ("macro_precision", "macro precision"),
                        ("macro_recall", "macro recall"), ("macro_f1", "macro F1")):
        log(f"  {label:<22}{metrics[name]:>8.4f}")
    for name, figures in metrics.get("members", {}).items():
        log(f"  member {name:<30} top-1 {figures['top1']:.4f}" + (f", with TTA {figures['tta']['top1']:.4f}" if "tta" in figures else ""))
    if "tta" in metrics:
        tta = metrics["tta"]
        log(f"test-time augmentation: probabilities averaged over {len(tta['views'])} views ({', '.join(tta['views'])})")
        for name, label in (("top1", "top-1 accuracy"), ("top5", f"top-{tta['top5_k']} accuracy"),
                            ("mean_class_accuracy", "mean class accuracy")):
            log(f"  {label:<22}{tta[name]:>8.4f}")
    if "order_blind_top1" in metrics:
        log(f"  {'order-blind top-1':<22}{metrics['order_blind_top1']:>8.4f}   (logistic regression on time-averaged features)")
    if metrics["most_confused"]:
        log("most confused (true -> predicted: clips, share of the true class):")
        for pair in metrics["most_confused"][:5]:
            log(f"  {pair['true']} -> {pair['predicted']}: {pair['clips']} ({pair['share_of_true']:.0%})")
    log(f"wrote {directory / runs.METRICS}, {runs.PER_CLASS}, {runs.CONFUSION}, {runs.PREDICTIONS}")
