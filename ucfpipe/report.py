"""Several evaluated runs -> one table: each run's split and scores, then mean ± standard deviation over the
runs, the way papers report UCF-101 over splits 1-3."""

from __future__ import annotations

import statistics
from pathlib import Path

from . import runs
from .errors import UcfpipeError

COLUMNS = (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class acc"))


def collect(run_dirs) -> list[dict]:
    rows = []
    for directory in run_dirs:
        path = Path(directory) / runs.METRICS
        if not path.is_file():
            raise UcfpipeError(f"{directory} has no {runs.METRICS}; run `ucfpipe eval --run {directory}` first")
        metrics = runs.read_json(path)
        rows.append({"run": str(directory), **metrics})
    if not rows:
        raise UcfpipeError("no run directories given: `ucfpipe report RUN_DIR...`")
    return rows


def summarise(rows: list[dict], columns=COLUMNS) -> dict:
    """Mean and sample standard deviation (n - 1; 0 for a single run) of each column."""
    summary = {}
    for key, _ in columns:
        values = [row[key] for row in rows]
        summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return summary


MARKDOWN_ROWS = {"top1": "LSTM top-1", "top5": "LSTM top-5", "mean_class_accuracy": "LSTM mean class accuracy",
                 "order_blind_top1": "order-blind top-1 (logistic regression on time-averaged features)"}


def markdown(rows: list[dict], summary: dict, columns) -> str:
    """The table as the README shows it: one row per figure, one column per run (named by its split), then
    mean ± std. Pasted verbatim, so the README's figures are exactly what this command printed."""
    header = "| | " + " | ".join(f"split {row['split']}" for row in rows) + " | mean ± std |"
    lines = [header, "| --- |" + " --- |" * (len(rows) + 1)]
    for key, _ in columns:
        mean = f"{summary[key]['mean']:.3f} ± {summary[key]['std']:.3f}"
        lines.append(f"| {MARKDOWN_ROWS.get(key, key)} | " + " | ".join(f"{row[key]:.3f}" for row in rows) + f" | {mean} |")
    return "\n".join(lines)


def run(run_dirs, log=print, as_markdown: bool = False) -> dict:
    rows = collect(run_dirs)
    columns = COLUMNS + ((("order_blind_top1", "order-blind"),) if all("order_blind_top1" in r for r in rows) else ())
    summary = summarise(rows, columns)
    if as_markdown:
        log(markdown(rows, summary, columns))
        return {"runs": rows, "summary": summary, "notes": []}
    width = max(len("mean ± std"), *(len(row["run"]) for row in rows))
    log(f"{'run':<{width}}  split" + "".join(f"{title:>18}" for _, title in columns) + "   test clips")
    for row in rows:
        log(f"{row['run']:<{width}}  {row['split']:>5}" + "".join(f"{row[key]:>18.4f}" for key, _ in columns)
            + f"   {row['num_test_clips']}" + (f" ({row['num_not_evaluated']} not evaluated)" if row.get("num_not_evaluated") else ""))
    log(f"{'mean ± std':<{width}}  {'':>5}" + "".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}".rjust(18) for k, _ in columns)
        + f"   over {len(rows)} runs")
    notes = []
    splits = [row["split"] for row in rows]
    if len(set(splits)) < len(splits):
        notes.append(f"splits repeat ({', '.join(map(str, splits))}): the spread is not the usual over-splits figure")
    if len({row.get("fingerprint") for row in rows}) > 1:
        notes.append("the runs used feature caches of different fingerprints (different stage-one settings)")
    if any(row.get("num_not_evaluated") for row in rows):
        notes.append("some runs scored a reduced test set (clips missing from the cache)")
    for note in notes:
        log(f"note: {note}")
    return {"runs": rows, "summary": summary, "notes": notes}
