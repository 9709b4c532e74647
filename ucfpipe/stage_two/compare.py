"""`ucfpipe compare`: what each stage-two improvement buys, on one cache and split, in one table.

Rows (each trained from scratch with the same settings apart from what the row names):
    baseline            one model, centre view only, no temporal augmentation, scored on the centre view
    + train aug         random stored view per clip and epoch, time jitter and step drop (seed `seed`)
    + TTA               the same model, probabilities averaged over every stored view at test time
    + ensemble          mean of `members` augmented models (seeds seed .. seed+members-1) with TTA
    order-blind         logistic regression on time-averaged centre features (ucfpipe.stage_two.order_blind)
Wall time is what the row costs on its own: training plus evaluation (the TTA row retrains nothing but
counts its model's training; the ensemble row counts every member's).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig, recorded
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json, write_text
from ucfpipe.stage_two import ensemble, evaluate, runs, train

TABLE = "compare.md"
RESULTS = "compare.json"


def _row(name: str, figures: dict, seconds: float, note: str = "") -> dict:
    return {"setup": name, "top1": figures.get("top1"), "top5": figures.get("top5"), "top5_k": figures.get("top5_k"),
            "mean_class_accuracy": figures.get("mean_class_accuracy"), "seconds": round(seconds, 1), "note": note}


def _timed(function, *args, **kwargs):
    started = time.monotonic()
    result = function(*args, **kwargs)
    return result, time.monotonic() - started


def run(config: TrainConfig, members: int = 3, log=print, verbose: int = 0) -> dict:
    """Train and score every row into `config.out` (a new directory); returns the rows and the markdown table."""
    config.validate()
    if members < 2:
        raise UcfpipeError(f"--members must be at least 2 (an ensemble of one is the augmented row), got {members}")
    out = Path(config.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UcfpipeError(f"--out {out} exists and is not an empty directory; choose a new directory for the comparison")
    store = FeatureStore(config.features)
    views = list(store.views)
    out.mkdir(parents=True, exist_ok=True)

    log(f"baseline: one {config.cell} model, centre view, no augmentation")
    base = dataclasses.replace(config, out=str(out / "baseline"), train_views="center", time_jitter=0.0, step_drop=0.0)
    _, train_s = _timed(train.run, base, log=_quiet, verbose=verbose)
    metrics, eval_s = _timed(evaluate.run, base.out, log=_quiet)
    rows = [_row("baseline (1 model, centre view)", metrics, train_s + eval_s)]
    rows += _augmented_rows(config, out, members, views, log, verbose)

    log("order-blind reference")
    baseline_run = runs.Run(base.out)
    clips = baseline_run.clip_ids
    top1, blind_s = _timed(evaluate.order_blind_top1_of, baseline_run, store, clips["test"])
    rows.append(_row("order-blind (time-averaged, logistic regression)", {"top1": top1}, blind_s,
                     "top-1 only"))

    table = markdown(rows, config, views)
    write_json(out / RESULTS, {"rows": rows, "views": views, "config": recorded(config), "members": members,
                                      "num_test_clips": len(clips["test"])})
    write_text(out / TABLE, table + "\n")
    log("")
    log(table)
    log("")
    log(f"wrote {out / TABLE} and {out / RESULTS}")
    return {"rows": rows, "table": table, "out": str(out)}


def _quiet(*_) -> None:
    pass


def _augmented_rows(config: TrainConfig, out: Path, members: int, views: list[str], log, verbose: int) -> list[dict]:
    """The rows of augmented models: one model, the same with TTA, and the ensemble of `members` seeds with TTA
    (whose first member is the one model)."""
    seeds = [config.seed + k for k in range(members)]
    augmented = dataclasses.replace(config, out=str(out / "ensemble"))
    plan = ensemble.members_plan(augmented, seeds, [config.cell])
    Path(augmented.out).mkdir()
    member_seconds = []
    for number, (name, member) in enumerate(plan, 1):
        log(f"augmented model {number}/{len(plan)} ({name}): train views {config.train_views} of {', '.join(views)}, "
            f"time jitter {config.time_jitter}, step drop {config.step_drop}")
        member_seconds.append(_timed(train.run, member, log=_quiet, verbose=verbose)[1])
    record = {"format": ensemble.FORMAT, "members": [name for name, _ in plan], "status": "running",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ensemble.finish(Path(augmented.out), record)

    first = plan[0][1].out
    metrics, eval_s = _timed(evaluate.run, first, log=_quiet)
    rows = [_row("+ training augmentation", metrics, member_seconds[0] + eval_s)]
    log("test-time augmentation" + ("" if len(views) > 1 else " (the cache stores only the centre view: same as above)"))
    metrics, eval_s = _timed(evaluate.run, first, tta=True, log=_quiet)
    rows.append(_row(f"+ TTA ({len(views)} view{'s' if len(views) > 1 else ''})", metrics["tta"], member_seconds[0] + eval_s))
    log(f"ensemble of {members}")
    metrics, eval_s = _timed(evaluate.run, augmented.out, tta=True, log=_quiet)
    rows.append(_row(f"+ {members}-seed ensemble (with TTA)", metrics["tta"], sum(member_seconds) + eval_s))
    return rows


def markdown(rows: list[dict], config: TrainConfig, views: list[str]) -> str:
    k = next((row["top5_k"] for row in rows if row.get("top5_k")), 5)

    def cell(value):
        return "–" if value is None else f"{value:.4f}"

    lines = [
        f"| setup | top-1 | top-{k} | mean class acc. | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['setup']} | {cell(row['top1'])} | {cell(row['top5'])} | {cell(row['mean_class_accuracy'])} "
                     f"| {row['seconds']:.1f} |")
    lines.append("")
    lines.append(f"split {config.split}, cache {config.features} (views: {', '.join(views)}); {config.cell} "
                 f"{config.units} units, at most {config.epochs} epochs, seed {config.seed}")
    return "\n".join(lines)

