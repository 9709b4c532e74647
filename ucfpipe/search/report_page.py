"""The page of a search: `ucfpipe report DIR --html FILE` where DIR is a `ucfpipe tune --out` directory.

One self-contained file, like a run's report.html (the kit of core/html.py: inline SVG, no script library, asks
the network for nothing): the default against the best on validation and test (result.json), every trial's
validation curve (Optuna's intermediate values, one per epoch; pruned trials grey, the default and the best
drawn over the rest, failed trials listed, not drawn), the parameter importances Optuna computes (PED-ANOVA,
from the complete trials), the value against each setting, and every trial in a table. The study is opened
through the storage tune.json names, read only: a SQLite file that is not there is refused, not created.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.html import document, escape, line_chart, write_page
from ucfpipe.search import study_report
from ucfpipe.stage_two.report_page import key_values

COLOURS = {"PRUNED": "#c4c4c4", "COMPLETE": "#7fa7d6", "default": "#2ca02c", "best": "#d62728"}
TOO_FEW = "The number of trials is too small to compute importances"  # Optuna's UserWarning, handled here


# -- the study ----------------------------------------------------------------------------------------------
def open_study(directory, tune: dict):
    """The study tune.json names, loaded (never created) from its storage; a missing one is one line."""
    where = Path(directory) / study_report.TUNE
    storage, name = tune["storage"], tune["study"]
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        raise UcfpipeError(f"{where} names the database {storage[len('sqlite:///'):]}, which is not there; "
                           "the page reads the trials from it: copy the tune directory whole")
    try:
        import optuna
    except ImportError:
        raise UcfpipeError("the page of a search reads its Optuna study: pip install 'ucfpipe[tune]'") from None
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UcfpipeError(f"{where} names the study {name!r}, which {storage} does not hold") from None
    except Exception as err:  # SQLAlchemy's errors (a server down, a wrong password) differ by database
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UcfpipeError(f"cannot open the study {name!r} at {storage} (from {where}): {first}") from None


def trials(study) -> list[dict]:
    """Each trial as the page draws it: number, state, value, curve (step, value) in step order, params."""
    records = []
    for trial in study.get_trials(deepcopy=False):
        records.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                        "curve": sorted(trial.intermediate_values.items()), "params": dict(trial.params),
                        "distributions": dict(trial.distributions), "attrs": dict(trial.user_attrs)})
    return records


def importances(study, records: list[dict]) -> tuple[dict, str | None]:
    """Optuna's parameter importances (PED-ANOVA, whatever the version's default), or ({}, why there are none)."""
    complete = sum(r["state"] == "COMPLETE" for r in records)
    if complete < 2:
        return {}, f"too few complete trials ({complete}) for parameter importances: 2 or more are needed"
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=TOO_FEW, category=UserWarning)
        try:
            found = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError) as err:
            return {}, f"Optuna computed no parameter importances: {err}"
    return {name: float(value) for name, value in found.items()}, None


# -- pieces of the page -------------------------------------------------------------------------------------
def role(record: dict, result: dict) -> str:
    """default, best, or the trial's state: what colour it gets."""
    if record["number"] == result["best"]["trial"]:
        return "best"
    if record["number"] == result["default"]["trial"] or record["attrs"].get("default") is True:
        return "default"
    return record["state"]


def curves(records: list[dict], result: dict) -> str:
    drawn = [r for r in records if r["state"] in ("COMPLETE", "PRUNED") and r["curve"]]
    if not drawn:
        return '<p class="note">no trial reported a validation value yet</p>'
    steps = max(step for r in drawn for step, _ in r["curve"]) + 1
    order = {"PRUNED": 0, "COMPLETE": 1, "default": 2, "best": 3}  # the highlighted ones over the rest
    series = []
    for record in sorted(drawn, key=lambda r: (order[role(r, result)], r["number"])):
        kind = role(record, result)
        values = [None] * steps
        for step, value in record["curve"]:
            values[step] = value
        width = "2.6" if kind in ("default", "best") else "1.3"
        series.append((f"trial {record['number']} ({record['state'].lower()}{', ' + kind if kind in ('default', 'best') else ''})",
                       values, COLOURS[kind], {"stroke-width": width, "class": f"curve {record['state'].lower()}",
                                               "data-trial": record["number"], "data-role": kind}))
    chart = line_chart(series, list(range(steps)), f"validation {result['monitor']} per epoch", width=900, height=320,
                       legend=False)
    failed = [r["number"] for r in records if r["state"] == "FAIL"]
    note = (f'<p class="note" id="failed">failed trials, not drawn: {", ".join(map(str, failed))}</p>' if failed else "")
    return chart + legend(result) + note


def legend(result: dict) -> str:
    keys = ((COLOURS["best"], f"best (trial {result['best']['trial']})"),
            (COLOURS["default"], f"default (trial {result['default']['trial']})"),
            (COLOURS["COMPLETE"], "complete"), (COLOURS["PRUNED"], "pruned (stopped early by the pruner)"))
    return '<p class="note">' + " ".join(f'<span class="bar" style="width:18px;background:{colour}"></span> {escape(text)}'
                                         for colour, text in keys) + "; hover a line for its trial</p>"


def importance_table(found: dict, why: str | None) -> str:
    if why:
        return f'<p class="note" id="no-importances">{escape(why)}</p>'
    body = "".join(f'<tr class="importance" data-param="{escape(name)}"><td>{escape(name)}</td>'
                   f'<td class=n data-importance="{share:.4f}">{share:.3f}</td>'
                   f'<td><span class="bar" style="width:{share * 300:.0f}px"></span></td></tr>'
                   for name, share in found.items())
    return (f'<table id="importances"><tr><th>setting</th><th class=n>importance</th><th></th></tr>{body}</table>'
            '<p class="note">Optuna\'s PED-ANOVA importances (optuna.importance), from the complete trials only; they sum to 1</p>')


def _position(value, distribution) -> float | None:
    """Where a setting's value sits on its axis: a choice's index, a log-scale value's log10, else the value."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return float(choices.index(value)) if value in choices else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if getattr(distribution, "log", False):
        return math.log10(value) if value > 0 else None
    return float(value)


def scatter(name: str, records: list[dict], result: dict, width: int = 280, height: int = 200) -> str:
    """The value of every finished trial against one setting: a choice per category, a range as a (log) axis."""
    points = [(r, r["params"][name]) for r in records if name in r["params"] and r["value"] is not None
              and r["state"] in ("COMPLETE", "PRUNED")]
    distribution = next((r["distributions"][name] for r, _ in points if name in r["distributions"]), None)
    placed = [(r, value, _position(value, distribution)) for r, value in points]
    placed = [p for p in placed if p[2] is not None]
    if not placed:
        return ""
    left, right, top, bottom = 44, 12, 22, 34
    xs, ys = [p[2] for p in placed], [p[0]["value"] for p in placed]
    choices = getattr(distribution, "choices", None)
    x0, x1 = (-0.5, len(choices) - 0.5) if choices is not None else (min(xs), max(xs))
    if x1 - x0 < 1e-12:
        x0, x1 = x0 - 0.5, x1 + 0.5
    low, high = min(ys), max(ys)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5

    def px(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def py(y):
        return top + (high - y) / (high - low) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" class="scatter" '
             f'data-param="{escape(name)}"><text x="{left}" y="14" font-size="12" font-weight="600">{escape(name)}</text>']
    for y in (low, high):
        parts.append(f'<text x="{left - 4}" y="{py(y) + 4:.1f}" font-size="10" text-anchor="end">{y:.3g}</text>')
    if choices is not None:
        ticks = [(float(i), str(c)) for i, c in enumerate(choices)]
    else:
        log = getattr(distribution, "log", False)
        ticks = [(x, f"{10 ** x:.3g}" if log else f"{x:.4g}") for x in sorted({x0, x1})]
    for x, label in ticks:
        parts.append(f'<text x="{px(x):.1f}" y="{height - bottom + 14}" font-size="10" text-anchor="middle">{escape(label)}</text>')
    if choices is None and getattr(distribution, "log", False):
        parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">log scale</text>')
    order = {"PRUNED": 0, "COMPLETE": 1, "default": 2, "best": 3}
    for record, value, x in sorted(placed, key=lambda p: order[role(p[0], result)]):
        kind = role(record, result)
        radius = 5 if kind in ("default", "best") else 3.5
        parts.append(f'<circle class="point" cx="{px(x):.1f}" cy="{py(record["value"]):.1f}" r="{radius}" '
                     f'fill="{COLOURS[kind]}" data-trial="{record["number"]}" data-role="{kind}">'
                     f'<title>trial {record["number"]} ({record["state"].lower()}): {escape(name)} = {escape(value)}, '
                     f'value {record["value"]:.4f}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def versus(result: dict) -> str:
    head = "".join(f"<th{' class=n' if i else ''}>{escape(t)}</th>" for i, t in enumerate(study_report.headers(result)))
    keys = ("validation", *(k for k, _ in study_report.TEST))
    body = []
    for row in study_report.rows(result):
        name, trial, *figures = study_report.cells(row)
        body.append(f'<tr data-row="{row["key"]}"><td>{escape(name)}</td><td class=n>{escape(trial)}</td>'
                    + "".join(f'<td class=n data-metric="{key}">{escape(text)}</td>' for key, text in zip(keys, figures))
                    + "</tr>")
    settings = "".join(f"<tr{' class=changed' if changed else ''}><td>{escape(name)}</td><td>{escape(a)}</td>"
                       f"<td>{'<b>' + escape(b) + '</b>' if changed else escape(b)}</td></tr>"
                       for name, a, b, changed in study_report.settings(result))
    return (f'<table id="versus"><tr>{head}</tr>{"".join(body)}</table>'
            f'<p class="note">validation: the held-out validation groups of the training list; test: the test list, '
            f"scored once after the search</p><h3>settings, default vs best (changed in bold)</h3>"
            f'<table id="settings"><tr><th>setting</th><th>default</th><th>best</th></tr>{settings}</table>')


def trial_table(records: list[dict], result: dict) -> str:
    names = list(dict.fromkeys(name for r in records for name in r["params"]))
    head = ("<tr><th class=n>trial</th><th>state</th><th class=n>value</th><th class=n>epochs</th><th class=n>seconds</th>"
            "<th>worker</th>" + "".join(f"<th>{escape(n)}</th>" for n in names) + "</tr>")
    body = []
    for r in records:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        seconds = r["attrs"].get("seconds")
        seconds = f"{seconds:.1f}" if isinstance(seconds, (int, float)) else ""
        params = "".join(f"<td>{escape(study_report.setting_text(r['params'].get(n)))}</td>" for n in names)
        body.append(f'<tr class="trial" data-trial="{r["number"]}" data-state="{r["state"].lower()}" '
                    f'data-role="{role(r, result)}"><td class=n>{r["number"]}</td><td>{r["state"].lower()}</td>'
                    f'<td class=n>{value}</td><td class=n>{len(r["curve"])}</td><td class=n>{seconds}</td>'
                    f'<td>{escape(r["attrs"].get("worker", ""))}</td>{params}</tr>')
    return f'<div class="grid"><table id="trials">{head}{"".join(body)}</table></div>'


def render(directory) -> str:
    directory = Path(directory)
    tune, result = study_report.read_tune(directory), study_report.read_result(directory)
    study = open_study(directory, tune)
    records = trials(study)
    found, why = importances(study, records)
    names = list(dict.fromkeys([*found, *(name for r in records for name in r["params"])]))
    title = f"ucfpipe search: {tune['study']}"
    body = "".join([
        f"<h1>{escape(title)}</h1>",
        f'<p id="counts">{escape(study_report.counts(result))} (of {escape(tune.get("trials", "?"))} asked); '
        f'split {escape(tune.get("split", "?"))}, study <code>{escape(tune["study"])}</code> in '
        f'<code>{escape(tune["storage"])}</code></p>',
        "<h2>default vs best</h2>", versus(result),
        "<h2>validation curves of every trial</h2>", curves(records, result),
        "<h2>parameter importances</h2>", importance_table(found, why),
        "<h2>value against each setting</h2>",
        '<p class="note">complete and pruned trials (a pruned one at its last reported value)</p>',
        "<div>" + "".join(scatter(name, records, result) for name in names) + "</div>",
        "<h2>every trial</h2>", trial_table(records, result),
        key_values("the search (tune.json)", {k: v for k, v in tune.items() if k != "space"}),
        key_values("search space", tune.get("space") or {}),
    ])
    data = {"study": tune["study"], "monitor": result["monitor"], "importances": found,
            "trials": [{"number": r["number"], "state": r["state"], "value": r["value"], "curve": r["curve"],
                        "params": r["params"]} for r in records]}
    return document(title, body, data)


def write(directory, path: str | Path) -> str:
    """The page of the search in `directory` into `path` (`-`: standard output); the line saying where it went."""
    return write_page(path, render(directory))
