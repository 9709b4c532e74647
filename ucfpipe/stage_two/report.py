"""Several evaluated runs -> one table: each run's split and scores, then mean ± standard deviation over the
runs, the way papers report UCF-101 over splits 1-3.

Runs of different datasets are refused (a mean over UCF-101 and HMDB51 splits is no figure of either); runs
that are not one setup (other classes, cache or training settings: `setups.verdict`, the rule the page
follows too) are listed without a mean, and one line says why. `require_margin` turns the demo's claim, that
the LSTM beats the order-blind reference by a wide margin, into a check that fails."""

from __future__ import annotations

import statistics
from pathlib import Path

from ucfpipe.core.errors import EXIT_INCOMPLETE, UcfpipeError
from ucfpipe.stage_two import runs, setups
from ucfpipe.stage_two.metrics import top_k, top_k_title

COLUMNS = (("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class acc"))  # top-5: the k used


class MarginNotMet(UcfpipeError):
    """The LSTM did not beat the order-blind reference by the margin asked for: a failed claim, not bad input."""

    exit_code = EXIT_INCOMPLETE


def _first_run(directory: Path) -> runs.Run | None:
    """The run, or an ensemble's first member: where metrics.json of older evals lacks the dataset and backbone."""
    return next(iter(setups.recorded(directory)), None)


def collect(run_dirs) -> list[dict]:
    rows = []
    for directory in run_dirs:
        metrics = runs.read_metrics(directory)
        if "dataset" not in metrics or "backbone" not in metrics:
            run = _first_run(Path(directory))
            metrics.setdefault("dataset", run and run.dataset)
            metrics.setdefault("backbone", run and run.backbone)
        setup = setups.of_run(directory, metrics)
        rows.append({"run": str(directory), **metrics, "setup": setup, "top_k": top_k(metrics, setup["classes"])})
    if not rows:
        raise UcfpipeError("no run directories given: `ucfpipe report RUN_DIR...`")
    by_dataset: dict[str, list[str]] = {}
    for row in rows:
        by_dataset.setdefault(row.get("dataset") or "unknown", []).append(row["run"])
    if len(by_dataset) > 1:
        named = "; ".join(f"{name}: {', '.join(dirs)}" for name, dirs in sorted(by_dataset.items()))
        raise UcfpipeError(f"the runs are of different datasets ({named}); report one dataset's runs at a time")
    return rows


CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "transformer": "Transformer"}


def model_name(rows: list[dict]) -> str:
    """What the runs trained, for labels: "LSTM", "GRU" or "Transformer" (an ensemble of cells, or runs of
    several: "model"). Runs recorded before the setting existed were LSTMs."""
    cells = set()
    for row in rows:
        cell = row["setup"]["settings"].get("cell", "lstm")
        cells.update(cell if isinstance(cell, list) else [cell])
    return CELL_NAMES.get(cells.pop(), "model") if len(cells) == 1 else "model"


def check_margin(rows: list[dict], margin: float) -> str:
    """Every run's top-1 must exceed its order-blind top-1 by at least `margin`; the line that says so."""
    lacking = [row["run"] for row in rows if "order_blind_top1" not in row]
    if lacking:
        raise UcfpipeError(f"--require-margin needs the order-blind reference, which {', '.join(lacking)} lacks; "
                           "run `ucfpipe eval --run RUN_DIR --baseline` first")
    worst = min(rows, key=lambda row: row["top1"] - row["order_blind_top1"])
    gap, model = worst["top1"] - worst["order_blind_top1"], model_name(rows)
    if not gap >= margin:
        raise MarginNotMet(
            f"the {model} beats the order-blind reference by only {gap:.3f} in {worst['run']} (top-1 {worst['top1']:.3f} "
            f"vs {worst['order_blind_top1']:.3f}), less than --require-margin {margin:g}: the {model} did not learn "
            "what frame order tells")
    return (f"margin: in every run the {model}'s top-1 beats the order-blind reference by at least {margin:g} "
            f"(the least: {gap:.3f}, {worst['run']})")


def verdict(rows: list[dict]) -> str | None:
    """None when the rows are one setup (a mean ± std means something); else the line saying why not."""
    return setups.verdict([(row["run"], row["setup"]) for row in rows])


def titles(rows: list[dict], columns) -> dict:
    """Each column's title, top-5's with the k the runs used."""
    return {key: top_k_title(row["top_k"] for row in rows) if key == "top5" else title for key, title in columns}


def summarise(rows: list[dict], columns=COLUMNS) -> dict:
    """Mean and sample standard deviation (n - 1; 0 for a single run) of each column."""
    summary = {}
    for key, _ in columns:
        values = [row[key] for row in rows]
        summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return summary


ORDER_BLIND_ROW = "order-blind top-1 (logistic regression on time-averaged features)"


def markdown(rows: list[dict], summary: dict | None, columns) -> str:
    """The table as the README shows it: one row per figure, one column per run (named by its split), then
    mean ± std (none without a `summary`: not one setup). Pasted verbatim, so the README's figures are exactly
    what this command printed."""
    model = model_name(rows)
    named = {"top1": f"{model} top-1", "top5": f"{model} {titles(rows, columns)['top5']}",
             "mean_class_accuracy": f"{model} mean class accuracy", "order_blind_top1": ORDER_BLIND_ROW}
    header = "| | " + " | ".join(f"split {row['split']}" for row in rows) + (" | mean ± std |" if summary else " |")
    lines = [header, "| --- |" + " --- |" * (len(rows) + bool(summary))]
    for key, _ in columns:
        mean = f" {summary[key]['mean']:.3f} ± {summary[key]['std']:.3f} |" if summary else ""
        lines.append(f"| {named.get(key, key)} | " + " | ".join(f"{row[key]:.3f}" for row in rows) + f" |{mean}")
    return "\n".join(lines)


def run(run_dirs, log=print, as_markdown: bool = False, require_margin: float | None = None, warn=None,
        html: str | None = None, protocol: str | None = None) -> dict:
    """Print the table with `log`; notes (and the margin's line) go to `warn` (default `log`), so that a
    markdown table can be redirected into a file whole. `html`: also one page of every run there; `protocol`:
    the tree `make reproduce` makes instead of RUN_DIRs, as setups x splits beside published figures."""
    warn = warn or log
    if protocol is not None:
        return _protocol(protocol, log, warn, html)
    if require_margin is not None and not 0 <= require_margin <= 1:
        raise UcfpipeError(f"--require-margin {require_margin} is not a top-1 difference; give one in [0, 1], e.g. 0.2")
    rows = collect(run_dirs)
    columns = COLUMNS + ((("order_blind_top1", "order-blind"),) if all("order_blind_top1" in r for r in rows) else ())
    apart = verdict(rows)
    summary = None if apart else summarise(rows, columns)
    notes = _notes(rows)
    if as_markdown:
        log(markdown(rows, summary, columns))
        if apart:  # beside the table, so that the table can be redirected into a file whole
            notes.insert(0, apart)
    else:
        _table(rows, summary, columns, log, apart)
    for note in notes:
        warn(f"note: {note}")
    if require_margin is not None:
        warn(check_margin(rows, require_margin))
    if html is not None:
        _write_html(run_dirs, html, warn)
    return {"runs": rows, "summary": summary, "notes": notes}


def _write_html(run_dirs, path, warn, before: str = "") -> None:
    from ucfpipe.stage_two import report_page

    warn(report_page.write(run_dirs, path, log=warn, before=before))


def _protocol(root, log, warn, html) -> dict:
    table = protocol_table(root)
    collect(table["run_dirs"])  # one dataset
    log(protocol_markdown(table))
    if html is not None:
        _write_html(table["run_dirs"], html, warn, before=protocol_html(table))
    return table


def _table(rows: list[dict], summary: dict | None, columns, log, apart: str | None = None) -> None:
    """The runs, then their mean ± std, or in its place the line saying why there is none."""
    width = max(len("mean ± std"), *(len(row["run"]) for row in rows))
    named = titles(rows, columns)
    log(f"{'run':<{width}}  split" + "".join(f"{named[key]:>18}" for key, _ in columns) + "   test clips")
    for row in rows:
        log(f"{row['run']:<{width}}  {row['split']:>5}" + "".join(f"{row[key]:>18.4f}" for key, _ in columns)
            + f"   {row['num_test_clips']}" + (f" ({row['num_not_evaluated']} not evaluated)" if row.get("num_not_evaluated") else ""))
    if summary is None:
        log(apart)
        return
    log(f"{'mean ± std':<{width}}  {'':>5}" + "".join(f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}".rjust(18) for k, _ in columns)
        + f"   over {len(rows)} runs")


def _notes(rows: list[dict]) -> list[str]:
    notes = []
    splits = [row["split"] for row in rows]
    if len(set(splits)) < len(splits):
        notes.append(f"splits repeat ({', '.join(map(str, splits))}): the spread is not the usual over-splits figure")
    if any(row.get("num_not_evaluated") for row in rows):
        notes.append("some runs scored a reduced test set (clips missing from the cache)")
    return notes


# -- the paper protocol (`make reproduce`): setups x splits, beside published figures ------------------------
# ROOT/split<k>/<folder> for each split; a row's figure is metrics.json's top-1, or its "tta" top-1.
PROTOCOL = (("LSTM (centre view)", "lstm", None), ("+ augmentation views", "aug", None),
            ("+ test-time augmentation", "aug", "tta"), ("+ ensemble of 3 (with TTA)", "ensemble", "tta"))
# Published CNN-LSTM top-1 figures on UCF-101, only those whose paper, table and split were confirmed (docs/report.md
# says how, and which were left out and why).
PUBLISHED = (
    {"row": "published: LRCN-fc6, RGB frames (Donahue et al. 2015)", "top1": 0.6820, "splits": "mean over splits 1-3",
     "source": "J. Donahue et al., Long-term Recurrent Convolutional Networks for Visual Recognition and Description, "
               "CVPR 2015, Table 1 (UCF101, RGB input, LRCN-fc6)"},
)


def protocol_runs(root: str | Path) -> dict[int, dict[str, Path]]:
    """{split: {folder: run directory}} of an evaluated protocol tree; refused when a setup is missing."""
    root = Path(root)
    splits = sorted(int(p.name[5:]) for p in root.glob("split*") if p.is_dir() and p.name[5:].isdigit())
    if not splits:
        raise UcfpipeError(f"{root} holds no split<k>/ folders; `make reproduce` (or reproduce-demo) makes them")
    found = {}
    for split in splits:
        found[split] = {}
        for _, folder, _ in PROTOCOL:
            directory = root / f"split{split}" / folder
            if not (directory / runs.METRICS).is_file():
                raise UcfpipeError(f"{directory} has no {runs.METRICS}: train and evaluate it first "
                                   "(`make reproduce` runs every step, and a rerun skips the runs already evaluated)")
            found[split][folder] = directory
    return found


def protocol_table(root: str | Path) -> dict:
    """Rows of top-1 (as fractions) per split and their mean ± std, then the published rows."""
    found = protocol_runs(root)
    splits = sorted(found)
    rows, notes = [], []

    def row(label: str, values: list[float], apart: str | None) -> dict:
        """A setup's figures over the splits, with their mean ± std where its runs are one setup."""
        if apart:
            notes.append(f"{label}: {apart}")
            return {"row": label, "values": values, "mean": None, "std": None}
        return {"row": label, "values": values, **summarise([{"v": v} for v in values], (("v", ""),))["v"]}

    apart_of = {}
    for label, folder, part in PROTOCOL:
        values, named = [], []
        for split in splits:
            metrics = runs.read_metrics(found[split][folder])
            if part is not None and part not in metrics:
                raise UcfpipeError(f"{found[split][folder]} was evaluated without --{part}; rerun `ucfpipe eval --run "
                                   f"{found[split][folder]} --{part}`")
            values.append((metrics[part] if part else metrics)["top1"])
            named.append((str(found[split][folder]), setups.of_run(found[split][folder], metrics)))
        apart_of[folder] = setups.verdict(named)
        rows.append(row(label, values, apart_of[folder]))
    blind = [runs.read_metrics(found[s]["lstm"]).get("order_blind_top1") for s in splits]
    if all(v is not None for v in blind):
        rows.append(row("order-blind reference (time-averaged features)", blind, apart_of["lstm"]))
    dataset = runs.read_metrics(found[splits[0]]["lstm"]).get("dataset")
    first = _first_run(found[splits[0]]["lstm"])
    weights = first.extract_config.get("weights") if first else None
    if dataset != "ucf101":
        notes.append(f"these runs are of the {dataset} dataset; the published rows are UCF-101's")
    if weights == "none":
        notes.append("these runs use random backbone weights (extract --weights none), so the published rows, "
                     "from ImageNet-trained CNNs on UCF-101, show the format only, not a comparison")
    return {"splits": splits, "rows": rows, "published": list(PUBLISHED), "dataset": dataset, "notes": notes,
            "run_dirs": [found[s][folder] for s in splits for folder in ("lstm", "aug", "ensemble")]}


def _mean(row: dict) -> str:
    """A protocol row's mean ± std in %, or – where its runs are not one setup (a note says why)."""
    return "–" if row["mean"] is None else f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def protocol_markdown(table: dict) -> str:
    """The table in the form papers use: top-1 % per split, mean ± std over the splits; published rows below,
    numbered to their sources."""
    splits = table["splits"]
    lines = ["| setup (top-1 %) | " + " | ".join(f"split {s}" for s in splits) + " | mean ± std |",
             "| --- |" + " ---: |" * (len(splits) + 1)]
    for row in table["rows"]:
        lines.append(f"| {row['row']} | " + " | ".join(f"{100 * v:.1f}" for v in row["values"]) + f" | {_mean(row)} |")
    for number, row in enumerate(table["published"], 1):
        lines.append(f"| {row['row']} [{number}] | " + " | ".join("–" for _ in splits) + f" | {100 * row['top1']:.1f} ({row['splits']}) |")
    lines.append("")
    for note in table.get("notes", []):
        lines += [f"Note: {note}.", ""]
    for number, row in enumerate(table["published"], 1):
        lines.append(f"[{number}] {row['source']}")
    return "\n".join(lines)


def protocol_html(table: dict) -> str:
    from ucfpipe.stage_two.report_page import escape

    splits = table["splits"]
    head = "<tr><th>setup (top-1 %)</th>" + "".join(f"<th class=n>split {s}</th>" for s in splits) + "<th class=n>mean ± std</th></tr>"
    body = "".join(f"<tr><td>{escape(r['row'])}</td>" + "".join(f"<td class=n>{100 * v:.1f}</td>" for v in r["values"])
                   + f"<td class=n>{_mean(r)}</td></tr>" for r in table["rows"])
    body += "".join(f"<tr><td>{escape(r['row'])} [{n}]</td>" + "<td class=n>–</td>" * len(splits)
                    + f"<td class=n>{100 * r['top1']:.1f} ({escape(r['splits'])})</td></tr>"
                    for n, r in enumerate(table["published"], 1))
    sources = "".join(f"<li>[{n}] {escape(r['source'])}</li>" for n, r in enumerate(table["published"], 1))
    notes = "".join(f'<p class="note">note: {escape(note)}</p>' for note in table.get("notes", []))
    return f'<h2>the paper protocol</h2><table id="protocol">{head}{body}</table>{notes}<ul class="note">{sources}</ul>'
