"""What a search shows: `ucfpipe report DIR` on a `ucfpipe tune --out` directory (tune.json, result.json and the
Optuna study they name) prints the default-vs-best table (text or markdown), and `--html FILE` writes the study's
page, opened in a real headless Chromium: every trial's curve, pruned ones grey, Optuna's importances, the
table's numbers, nothing asked of the network. The study is a real SQLite one made by Optuna itself, with a
toy objective (no training): trial 0 enqueued as the default, a median pruner, one trial that fails."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from helpers import browse, invoke, needs_browser
from ucfpipe.search import report_page, study_report

optuna = pytest.importorskip("optuna", reason="optuna is not installed (pip install 'ucfpipe[tune]')")

EPOCHS = 6
FAILING = 4  # the trial whose objective raises
DEFAULTS = {"cell": "lstm", "units": 64, "learning_rate": 1e-3}


def objective(trial):
    cell = trial.suggest_categorical("cell", ["lstm", "gru"])
    units = trial.suggest_int("units", 16, 128, log=True)
    rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    trial.set_user_attr("worker", "host:123")
    trial.set_user_attr("seed", 7 + trial.number)
    trial.set_user_attr("seconds", 1.5)
    if trial.number == FAILING:
        raise RuntimeError("a trial that fails")
    quality = 0.9 - 0.1 * abs(math.log10(rate) + 2.5) - (0.05 if cell == "gru" else 0) + units / 2000
    best = 0.0
    for epoch in range(EPOCHS):
        value = quality * (1 - math.exp(-(epoch + 1) / 2))
        trial.report(value, epoch)
        best = max(best, value)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return best


def make_tune_dir(directory: Path, trials: int = 14) -> dict:
    """A tune directory as `ucfpipe tune --out` leaves it (tune.json, result.json, study.db); returns result.json."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    directory.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{directory / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="toy-split1", direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study.enqueue_trial(DEFAULTS, user_attrs={"default": True})
    study.optimize(objective, n_trials=trials, catch=(RuntimeError,))
    states = [t.state.name for t in study.trials]
    default, best = study.trials[0], study.best_trial
    result = {"monitor": "val_accuracy",
              "default": {"trial": 0, "params": default.params, "validation": default.value,
                          "test": {"top1": 0.5, "top5": 0.8, "mean_class": 0.49}},
              "best": {"trial": best.number, "params": best.params, "validation": best.value,
                       "test": {"top1": 0.625, "top5": 0.875, "mean_class": 0.6}},
              "ensemble": None, "finished": states.count("COMPLETE") + states.count("PRUNED"),
              "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL"),
              "seconds_per_trial": 1.5}
    tune = {"storage": storage, "study": "toy-split1", "features": "/features", "fingerprint": "abc", "splits": "/lists",
            "split": 1, "seed": 0, "trials": trials, "pruner": "median", "versions": {}, "command": ["ucfpipe", "tune"],
            "space": {"cell": {"choices": ["lstm", "gru"]}, "units": {"low": 16, "high": 128, "log": True},
                      "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}}}
    (directory / "tune.json").write_text(json.dumps(tune))
    (directory / "result.json").write_text(json.dumps(result))
    return result


@pytest.fixture(scope="module")
def tune_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("search") / "tune"
    result = make_tune_dir(directory)
    assert result["pruned"] and result["complete"] >= 2 and result["failed"] == 1, result
    assert result["best"]["trial"] != 0, "the toy search must find something better than the default"
    return directory


def report(*args):
    return invoke("report", *args)


def copy_of(tune_dir, tmp_path) -> Path:
    copy = tmp_path / "tune"
    shutil.copytree(tune_dir, copy)
    tune = json.loads((copy / "tune.json").read_text())
    tune["storage"] = f"sqlite:///{copy / 'study.db'}"
    (copy / "tune.json").write_text(json.dumps(tune))
    return copy


# -- the table ------------------------------------------------------------------------------------------------
def test_report_of_a_tune_dir_prints_default_vs_best_counts_and_changed_settings(tune_dir):
    result = json.loads((tune_dir / "result.json").read_text())
    outcome = report(tune_dir)
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0].startswith("search toy-split1 (") and study_report.counts(result) in lines[0]
    assert f"{result['finished']} trials finished ({result['complete']} complete, {result['pruned']} pruned), 1 failed" in lines[0]
    default = next(line for line in lines if line.startswith("default (train's settings)"))
    assert default.split()[-5:] == ["0", f"{result['default']['validation']:.3f}", "0.500", "0.800", "0.490"]
    best = next(line for line in lines if line.startswith("best of "))
    assert best.split()[-5:] == [str(result["best"]["trial"]), f"{result['best']['validation']:.3f}", "0.625", "0.875", "0.600"]
    change = next(line for line in lines if line.startswith("best - default"))
    gain = result["best"]["validation"] - result["default"]["validation"]
    assert change.split()[-4:] == [f"{gain:+.3f}", "+0.125", "+0.075", "+0.110"]
    assert any(line.strip().startswith("* learning_rate") for line in lines)


def test_markdown_table_is_the_one_docs_paste(tune_dir):
    result = json.loads((tune_dir / "result.json").read_text())
    outcome = report(tune_dir, "--markdown")
    assert outcome.exit_code == 0, outcome.output
    lines = outcome.output.splitlines()
    assert lines[0] == "| | trial | validation (val_accuracy) | test top-1 | test top-5 | test mean class acc. |"
    assert lines[1] == "| --- | ---: | ---: | ---: | ---: | ---: |"
    assert lines[2] == f"| default (train's settings) | 0 | {result['default']['validation']:.3f} | 0.500 | 0.800 | 0.490 |"
    assert lines[3].startswith(f"| best of {result['finished']} trials | {result['best']['trial']} |")
    assert lines[4].startswith("| best - default | |") and "+0.125" in lines[4]
    assert f"{study_report.counts(result)}." in lines
    assert "| setting | default | best |" in lines


def test_an_ensemble_in_result_json_gets_its_row(tmp_path, tune_dir):
    result = json.loads((tune_dir / "result.json").read_text())
    result["ensemble"] = {"trials": [3, 7, 9], "test": {"top1": 0.7, "top5": 0.9, "mean_class": 0.68}}
    rows = study_report.rows(result)
    assert [r["key"] for r in rows] == ["default", "best", "ensemble", "change"]
    assert study_report.cells(rows[2])[:2] == ["ensemble of the 3 best", "3, 7, 9"]
    assert study_report.cells(rows[2])[3:] == ["0.700", "0.900", "0.680"]


# -- refusals: one line each --------------------------------------------------------------------------------------
def test_a_tune_dir_with_run_dirs_or_another_tune_dir_is_one_line(tune_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for others in ([tune_dir, run], [run, tune_dir], [tune_dir, tune_dir]):
        outcome = report(*others)
        assert outcome.exit_code == 2 and "is a search (it holds tune.json or result.json); report it alone" in outcome.output
        assert len(outcome.output.strip().splitlines()) == 1 and "Traceback" not in outcome.output


@pytest.mark.parametrize("name, damage, says", [
    ("result.json", "missing", "result.json is missing; it is written when `ucfpipe tune --out"),
    ("result.json", "{not json", "result.json is not valid JSON"),
    ("result.json", '{"monitor": "val_accuracy"}', "result.json has no 'default'"),
    ("tune.json", "[1, 2]", "tune.json holds a list where a JSON object was expected"),
    ("tune.json", "missing", "tune.json is missing; it is written by `ucfpipe tune --out DIR`"),
])
def test_a_missing_or_damaged_tune_or_result_file_is_one_line_naming_it(tune_dir, tmp_path, name, damage, says):
    copy = copy_of(tune_dir, tmp_path)
    if damage == "missing":
        (copy / name).unlink()
    else:
        (copy / name).write_text(damage)
    for args in ([copy], [copy, "--html", tmp_path / "page.html"]):
        outcome = report(*args)
        assert outcome.exit_code == 2, outcome.output
        assert str(copy / name) in outcome.output and says in outcome.output
        assert len(outcome.output.strip().splitlines()) == 1 and "Traceback" not in outcome.output
    assert not (tmp_path / "page.html").exists()


def test_the_page_refuses_a_missing_database_and_creates_none(tune_dir, tmp_path):
    copy = copy_of(tune_dir, tmp_path)
    (copy / "study.db").unlink()
    outcome = report(copy, "--html", tmp_path / "page.html")
    assert outcome.exit_code == 2 and "which is not there" in outcome.output and str(copy / "tune.json") in outcome.output
    assert not (copy / "study.db").exists() and not (tmp_path / "page.html").exists()


def test_a_study_name_the_storage_lacks_is_one_line(tune_dir, tmp_path):
    copy = copy_of(tune_dir, tmp_path)
    tune = json.loads((copy / "tune.json").read_text())
    (copy / "tune.json").write_text(json.dumps({**tune, "study": "other"}))
    outcome = report(copy, "--html", tmp_path / "page.html")
    assert outcome.exit_code == 2 and "names the study 'other', which sqlite:///" in outcome.output


def test_require_margin_is_refused_for_a_search(tune_dir):
    outcome = report(tune_dir, "--require-margin", "0.1")
    assert outcome.exit_code == 2 and "is a search; drop it" in outcome.output


# -- the page -----------------------------------------------------------------------------------------------------
def test_importances_need_two_complete_trials():
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    records = report_page.trials(study)
    assert report_page.importances(study, records) == ({}, "too few complete trials (1) for parameter importances: "
                                                             "2 or more are needed")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    found, why = report_page.importances(study, report_page.trials(study))
    assert why is None and list(found) == ["x"] and type(found["x"]) is float


def test_the_page_is_self_contained_and_draws_every_finished_trial(tune_dir):
    text = report_page.render(tune_dir)
    study = optuna.load_study(study_name="toy-split1", storage=f"sqlite:///{tune_dir / 'study.db'}")
    drawn = [t.number for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    for number in drawn:
        assert f'data-trial="{number}" data-role=' in text
    assert f"failed trials, not drawn: {FAILING}" in text
    assert "src=\"http" not in text and "href=\"http" not in text and "@import" not in text


@needs_browser
def test_study_page_in_a_browser(tune_dir, tmp_path):
    result = json.loads((tune_dir / "result.json").read_text())
    study = optuna.load_study(study_name="toy-split1", storage=f"sqlite:///{tune_dir / 'study.db'}")
    states = {t.number: t.state.name for t in study.trials}
    page = tmp_path / "study.html"
    outcome = report(tune_dir, "--html", page)
    assert outcome.exit_code == 0, outcome.output
    assert f"wrote {page}" in outcome.output

    def actions(page_):
        curves = page_.evaluate("""() => Array.from(document.querySelectorAll('polyline.curve')).map(line =>
            [+line.dataset.trial, line.getAttribute('stroke'), line.getAttribute('points').split(' ').length,
             line.getBoundingClientRect().width > 0])""")
        versus = {row: {metric: page_.locator(f'#versus tr[data-row="{row}"] td[data-metric="{metric}"]').inner_text()
                        for metric in ("validation", "top1", "top5", "mean_class")} for row in ("default", "best")}
        return {"curves": curves, "versus": versus,
                "importances": page_.locator("#importances tr.importance").evaluate_all(
                    "rows => rows.map(r => [r.dataset.param, +r.querySelector('[data-importance]').dataset.importance])"),
                "scatters": page_.locator("svg.scatter").evaluate_all("s => s.map(x => [x.dataset.param, x.querySelectorAll('circle').length])"),
                "rows": page_.locator("#trials tr.trial").count()}

    seen = browse(page, tmp_path, "report-study", actions)
    assert seen["console"] == [] and seen["errors"] == [] and seen["dialogs"] == [] and seen["requests"] == []
    finished = sorted(n for n, s in states.items() if s in ("COMPLETE", "PRUNED"))
    assert sorted(n for n, *_ in seen["curves"]) == finished  # every finished trial drawn once, the failed one not
    for number, stroke, points, visible in seen["curves"]:
        assert visible and points == len(study.trials[number].intermediate_values)
        if number == result["best"]["trial"]:
            assert stroke == report_page.COLOURS["best"]
        elif number == 0:
            assert stroke == report_page.COLOURS["default"]
        else:
            assert stroke == report_page.COLOURS[states[number]]  # pruned ones grey
    assert any(states[n] == "PRUNED" and s == report_page.COLOURS["PRUNED"] for n, s, *_ in seen["curves"])
    assert seen["versus"]["default"] == {"validation": f"{result['default']['validation']:.3f}", "top1": "0.500",
                                         "top5": "0.800", "mean_class": "0.490"}
    assert seen["versus"]["best"] == {"validation": f"{result['best']['validation']:.3f}", "top1": "0.625",
                                      "top5": "0.875", "mean_class": "0.600"}
    assert sorted(name for name, _ in seen["importances"]) == ["cell", "learning_rate", "units"]
    assert abs(sum(share for _, share in seen["importances"]) - 1) < 1e-3
    assert sorted(seen["scatters"]) == [[name, len(finished)] for name in ("cell", "learning_rate", "units")]
    assert seen["rows"] == len(states)
