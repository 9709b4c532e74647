"""What a search bought, in text: `ucfpipe report DIR` where DIR is a `ucfpipe tune --out` directory.

Read from DIR's files alone (tune.json, result.json; no Optuna, no Keras): the default (trial 0, `train`'s
settings) against the best trial on validation and on the test list, how many trials finished, were pruned
or failed, the seconds a trial took, and the settings the best trial changed. `--markdown` prints the same
table as docs/tune.md shows it. The page (`--html`) is `search.report_page`, which reads these files too.
"""

from __future__ import annotations

from pathlib import Path

from ucfpipe.core.errors import UcfpipeError
from ucfpipe.stage_two.runs import check_shape, read_json

TUNE = "tune.json"
RESULT = "result.json"
TUNE_FIELDS = {"storage": "text", "study": "text", "trials?": "an integer", "split?": "an integer"}
OUTCOME = {"trial": "an integer", "params": "an object", "validation": "a number", "test?": "an object"}
RESULT_FIELDS = {"monitor": "text", "default": "an object", "best": "an object", "finished": "an integer",
                 "complete": "an integer", "pruned": "an integer", "failed": "an integer",
                 "seconds_per_trial": "a number",
                 **{f"{side}.{key}": kind for side in ("default", "best") for key, kind in OUTCOME.items()}}
TEST = (("top1", "test top-1"), ("top5", "test top-5"), ("mean_class", "test mean class acc."))


def is_study(directory) -> bool:
    """A tune directory: it holds tune.json (written first) or result.json (a damaged one is still a search)."""
    return any((Path(directory) / name).is_file() for name in (TUNE, RESULT))


def study_of(run_dirs) -> Path | None:
    """The tune directory among `run_dirs`, None when there is none; a study with anything else is one line."""
    studies = [d for d in run_dirs if is_study(d)]
    if not studies:
        return None
    if len(run_dirs) > 1:
        others = [str(d) for d in run_dirs if d != studies[0]]
        raise UcfpipeError(f"{studies[0]} is a search (it holds {TUNE} or {RESULT}); report it alone, without {', '.join(others)}: "
                           f"`ucfpipe report {studies[0]}`")
    return Path(studies[0])


def read_tune(directory) -> dict:
    return read_json(Path(directory) / TUNE, TUNE_FIELDS,
                     "it is written by `ucfpipe tune --out DIR`; rerun that command to write it again")


def read_result(directory) -> dict:
    path = Path(directory) / RESULT
    fix = f"it is written when `ucfpipe tune --out {directory}` finishes; rerun that command to finish the search"
    result = read_json(path, RESULT_FIELDS, fix)
    for side in ("default", "best"):
        test = result[side].get("test")
        if test is not None:
            check_shape(path, test, {"top1": "a number", "top5?": "a number", "mean_class?": "a number"}, fix)
    return result


def test_score(outcome: dict | None, key: str):
    """A test figure of the default, the best or the ensemble; eval's long name for mean class is read too."""
    test = (outcome or {}).get("test") or {}
    return test.get(key, test.get("mean_class_accuracy") if key == "mean_class" else None)


def rows(result: dict) -> list[dict]:
    """The table's rows: default, best, the ensemble when there is one, and the change best - default."""
    default, best = result["default"], result["best"]
    table = [{"name": "default (train's settings)", "key": "default", "trial": default["trial"],
              "validation": default["validation"], **{k: test_score(default, k) for k, _ in TEST}},
             {"name": f"best of {result['finished']} trials", "key": "best", "trial": best["trial"],
              "validation": best["validation"], **{k: test_score(best, k) for k, _ in TEST}}]
    ensemble = result.get("ensemble")
    if isinstance(ensemble, dict) and isinstance(ensemble.get("test"), dict):
        members = ensemble.get("trials") or ensemble.get("members") or []
        table.append({"name": f"ensemble of the {len(members) or 'top'} best", "key": "ensemble",
                      "trial": ", ".join(map(str, members)) if members else None,
                      "validation": ensemble.get("validation"), **{k: test_score(ensemble, k) for k, _ in TEST}})
    change = {"name": "best - default", "key": "change", "trial": None}
    for key in ("validation", *(k for k, _ in TEST)):
        a, b = table[0][key], table[1][key]
        change[key] = None if a is None or b is None else b - a
    table.append(change)
    return table


def _cell(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def counts(result: dict) -> str:
    return (f"{result['finished']} trials finished ({result['complete']} complete, {result['pruned']} pruned), "
            f"{result['failed']} failed; {result['seconds_per_trial']:.1f} s per trial")


def settings(result: dict) -> list[tuple[str, str, str, bool]]:
    """(setting, default, best, changed) for every setting either trial chose."""
    default, best = result["default"]["params"], result["best"]["params"]
    names = list(dict.fromkeys([*default, *best]))
    return [(name, setting_text(default.get(name)), setting_text(best.get(name)), default.get(name) != best.get(name))
            for name in names]


def setting_text(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def headers(result: dict) -> list[str]:
    return ["", "trial", f"validation ({result['monitor']})", *(title for _, title in TEST)]


def cells(row: dict) -> list[str]:
    signed = row["key"] == "change"
    trial = "" if row["trial"] is None else str(row["trial"])
    return [row["name"], trial, *(_cell(row[k], signed) for k in ("validation", *(k for k, _ in TEST)))]


def text(directory, tune: dict, result: dict) -> str:
    table = [headers(result), *(cells(row) for row in rows(result))]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [f"search {tune['study']} ({directory}): {counts(result)}"]
    for line in table:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
    chosen = settings(result)
    if chosen:
        width = max(len(name) for name, *_ in chosen)
        lines.append("settings (default -> best; * changed):")
        lines.extend(f"  {'*' if changed else ' '} {name.ljust(width)}  {a} -> {b}" for name, a, b, changed in chosen)
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The table as docs/tune.md shows it, then the trial counts and the settings default vs best."""
    lines = [_markdown_line(headers(result)), "| --- |" + " ---: |" * (len(headers(result)) - 1)]
    lines += [_markdown_line(cells(row)) for row in rows(result)]
    lines += ["", counts(result) + ".", "", "| setting | default | best |", "| --- | --- | --- |"]
    lines += [f"| {name} | {a} | {'**' + b + '**' if changed else b} |" for name, a, b, changed in settings(result)]
    return "\n".join(lines)


def _markdown_line(cells: list[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def run(directory, log=print, as_markdown: bool = False) -> dict:
    """Print the table of the search in `directory` with `log` (its page: `search.report_page.write`)."""
    tune, result = read_tune(directory), read_result(directory)
    log(markdown(result) if as_markdown else text(directory, tune, result))
    return {"tune": tune, "result": result, "rows": rows(result)}
