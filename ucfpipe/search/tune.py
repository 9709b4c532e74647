"""`ucfpipe tune`: everything is checked first (nothing is written for bad input), then DIR/tune.json, the study,
trials until it holds K finished ones (with any peers on the same storage), and in the --out process the best
retrained and scored once on the test list (DIR/trials.csv, best.toml, best/, result.json). A rerun of a finished
search prints its result without training."""

from __future__ import annotations

import dataclasses
import datetime
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ucfpipe import datasets
from ucfpipe.cache.store import FeatureStore
from ucfpipe.config import TrainConfig
from ucfpipe.core import files
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.provenance import versions
from ucfpipe.search import best as finals
from ucfpipe.search import space as spaces
from ucfpipe.search import study as studies
from ucfpipe.search import study_report
from ucfpipe.search.loop import counts, run_until
from ucfpipe.search.objective import make_objective
from ucfpipe.search.study_report import RESULT, TUNE

TRIALS_CSV, BEST_TOML, STUDY_DB = "trials.csv", "best.toml", "study.db"  # beside study_report's TUNE and RESULT


@dataclass
class Search:
    base: TrainConfig  # train's settings (--config and flags); `out` unused
    trials: int
    space: str
    out: str | None = None
    storage: str | None = None
    timeout: float | None = None
    seed: int = 0
    jobs: int = 1
    pruner: str = "median"
    study: str | None = None
    worker: bool = False
    ensemble_top: int | None = None
    trials_dir: str | None = None  # a --worker's own run directories (the --jobs helpers write into DIR/trials)


def check(search: Search) -> None:
    if search.trials < 1:
        raise UcfpipeError(f"--trials must be a positive integer, got {search.trials}")
    if search.timeout is not None and search.timeout <= 0:
        raise UcfpipeError(f"--timeout must be a positive number of seconds, got {search.timeout:g}")
    if search.jobs < 1:
        raise UcfpipeError(f"--jobs must be a positive integer (processes running trials), got {search.jobs}")
    if search.seed < 0:
        raise UcfpipeError(f"--seed must be a non-negative integer, got {search.seed}")
    if search.pruner not in studies.PRUNERS:
        raise UcfpipeError(f"--pruner must be one of {', '.join(studies.PRUNERS)}; got {search.pruner}")
    if search.worker:
        if search.out:
            raise UcfpipeError("--worker runs trials only and writes no DIR: drop --out DIR (or drop --worker)")
        if not search.storage:
            raise UcfpipeError("--worker needs --storage URL, the database of the study it joins")
        if search.ensemble_top:
            raise UcfpipeError("--ensemble-top is for the `tune --out DIR` process; drop it with --worker")
    elif not search.out:
        raise UcfpipeError("give --out DIR (the search's directory), or --worker --storage URL to only run trials")
    if search.ensemble_top is not None and search.ensemble_top < 2:
        raise UcfpipeError(f"--ensemble-top must be at least 2 (an ensemble's members), got {search.ensemble_top}")
    if search.out:
        out = Path(search.out)
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / TUNE).is_file())):
            raise UcfpipeError(f"--out {out} exists and is not a tune directory; choose a new --out")


def run(search: Search, argv: list[str], log=print) -> dict:
    check(search)
    base = dataclasses.replace(search.base, out="(trials)", seed=search.seed)
    base._file_keys = getattr(search.base, "_file_keys", {})
    base.validate()
    space = spaces.load(search.space)
    defaults = spaces.defaults_in(space, base, f"--space {search.space}")
    fingerprint = _check_cache(base, search.seed)
    name = search.study or studies.default_name(fingerprint, base.split)
    out = Path(search.out).resolve() if search.out else None
    url = search.storage or f"sqlite:///{out / STUDY_DB}"
    if search.storage:
        studies.check_url(url)
        storage = studies.open_storage(url)  # unreachable: one line, and nothing written yet
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files.write_json(out / TUNE, {
            "storage": url, "study": name, "features": str(Path(base.features).resolve()), "fingerprint": fingerprint,
            "splits": str(Path(base.splits).resolve()), "split": base.split, "seed": search.seed, "trials": search.trials,
            "space": space, "pruner": search.pruner, "monitor": base.monitor, "versions": versions(), "command": argv})
        files.write_text(out / "train.toml", finals.settings_toml(base, "train's settings every trial starts from (the --jobs workers read them)"))
    if not search.storage:
        storage = studies.open_storage(url)
    direction = "maximize" if base.monitor.endswith("accuracy") else "minimize"
    tags = {"fingerprint": fingerprint, "split": base.split, "space_hash": spaces.space_hash(space),
            "seed": search.seed, "monitor": base.monitor}
    study = studies.open_study(storage, name, tags, defaults, search.seed, search.worker,
                               studies.make_pruner(search.pruner, base.epochs), direction)
    if out is not None:
        _default_again(study, defaults)
    trials_dir = out / "trials" if out is not None else (Path(search.trials_dir) if search.trials_dir else None)
    if trials_dir is not None:
        trials_dir.mkdir(parents=True, exist_ok=True)
        files.clear_stale(trials_dir)  # the half-made runs of killed processes
    deadline = time.time() + search.timeout if search.timeout else None
    if out is not None and (out / RESULT).is_file() and counts(study)["finished"] >= search.trials:
        result = json.loads((out / RESULT).read_text())
        if _still_holds(result, study, search):
            log(f"{name}: finished earlier ({result['finished']} trials); its result:")
            _show(out, result, log)
            return result
    helpers = _start_helpers(search, out, url, name, base) if out is not None and search.jobs > 1 else []
    try:
        progress = _Progress(study, search.trials, search.jobs, log)
        objective = make_objective(base, space, search.seed, trials_dir)
        now = run_until(study, objective, search.trials, deadline, on_trial=progress)
        if search.worker:
            log(f"worker {studies.worker_name()}: study {name} has {now['finished']} finished trials of {search.trials}")
            return now
        for helper in helpers:
            helper.wait()
    finally:
        for helper in helpers:
            if helper.poll() is None:
                helper.send_signal(signal.SIGTERM)
                helper.wait()
    return _finish(study, search, base, out, now, log)


def _check_cache(base: TrainConfig, seed: int) -> str:
    """The cache's fingerprint, after checking it holds the split's clips (train's own check, read-only)."""
    from ucfpipe.stage_two.clip_plan import check_labels, plan_clips

    store = FeatureStore(base.features)
    split = datasets.read_split(datasets.of_cache(store.config), base.splits, base.split)
    check_labels(split, store)
    plan_clips(split, store, dataclasses.replace(base, seed=seed))
    return store.fingerprint


def _default_again(study, defaults: dict) -> None:
    """Trial 0 is train's defaults; if it was killed (FAIL), they run again as a new trial."""
    from optuna.trial import TrialState

    if not any(t.user_attrs.get("default") and t.state != TrialState.FAIL for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial(defaults, user_attrs={"default": True})


def _start_helpers(search: Search, out: Path, url: str, name: str, base: TrainConfig) -> list[subprocess.Popen]:
    """--jobs N: N-1 `tune --worker` processes beside this one, on the same study, writing into DIR/trials."""
    command = [sys.executable, "-m", "ucfpipe.cli", "tune", "--worker", "--storage", url, "--study", name,
               "--config", str(out / "train.toml"), "--space", str(Path(search.space).resolve()),
               "--trials", str(search.trials), "--seed", str(search.seed), "--pruner", search.pruner,
               "--trials-dir", str(out / "trials")]
    if search.timeout:
        command += ["--timeout", str(search.timeout)]
    return [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(search.jobs - 1)]


class _Progress:
    """One line per finished trial: trial, value, best so far, pruned count, ETA."""

    def __init__(self, study, trials: int, jobs: int, log):
        self.study, self.trials, self.jobs, self.log = study, trials, jobs, log
        self.shown: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def __call__(self, now: dict) -> None:
        done = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished() and not t.user_attrs.get("surplus")]
        ended = [t for t in done if t.number not in self.shown]
        spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done
                 if t.datetime_start and t.datetime_complete]
        left = max(self.trials - now["finished"], 0)
        eta = datetime.timedelta(seconds=round(sum(spans) / len(spans) * left / self.jobs)) if spans else "?"
        try:
            top = self.study.best_trial
            best = f"best {top.value:.4f} (trial {top.number})"
        except ValueError:
            best = "no completed trial yet"
        for trial in sorted(ended, key=lambda t: t.number):
            self.shown.add(trial.number)
            value = f"{trial.value:.4f}" if trial.value is not None else "-"
            self.log(f"trial {trial.number} {trial.state.name.lower()}: {value}; {best}; {now['finished']}/{self.trials} "
                     f"finished, {now['pruned']} pruned, {now['failed']} failed; ETA {eta}")


def _still_holds(result: dict, study, search: Search) -> bool:
    try:
        best = study.best_trial.number
    except ValueError:
        return False
    wanted = search.ensemble_top or None
    have = (result.get("ensemble") or {}).get("trials")
    return result.get("best", {}).get("trial") == best and (len(have) if have else None) == wanted


def trials_rows(study) -> tuple[list[str], list[list]]:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    params = sorted({name for t in trials for name in t.params})
    header = ["number", "state", "value", *params, "worker", "seed", "seconds"]
    rows = [[t.number, t.state.name, "" if t.value is None else t.value, *(t.params.get(p, "") for p in params),
             t.user_attrs.get("worker", ""), t.user_attrs.get("seed", ""), t.user_attrs.get("seconds", "")] for t in trials]
    return header, rows


def _finish(study, search: Search, base: TrainConfig, out: Path, now: dict, log) -> dict:
    from optuna.trial import TrialState

    files.write_csv(out / TRIALS_CSV, *trials_rows(study))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UcfpipeError(f"no trial completed ({now['pruned']} pruned, {now['failed']} failed); see {out / TRIALS_CSV}")
    best = study.best_trial
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    log(f"best: trial {best.number}, validation {base.monitor} {best.value:.4f}; retraining it into {out / 'best'}")
    finals.write_best_toml(out / BEST_TOML, base, best.params, search.seed, best.number, best.value)
    finals.retrain(base, best.params, search.seed, out / "best")
    result = {"monitor": base.monitor, "study": study.study_name,
              "best": {"trial": best.number, "params": best.params, "validation": best.value,
                       "test": finals.test_scores(out / "best"), "run": str(out / "best")}}
    result["default"] = _default_outcome(study, default, base, search.seed, out)
    ranked = sorted(complete, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE")
    result["ensemble"] = (finals.ensemble_top(base, ranked[:search.ensemble_top], search.seed, out / "ensemble")
                          if search.ensemble_top else None)
    seconds = [t.user_attrs["seconds"] for t in study.get_trials(deepcopy=False) if "seconds" in t.user_attrs]
    result.update(finished=now["finished"], complete=now["complete"], pruned=now["pruned"], failed=now["failed"],
                  seconds_per_trial=round(sum(seconds) / len(seconds), 1) if seconds else None)
    files.write_json(out / RESULT, result)
    _show(out, result, log)
    log(f"  {out / BEST_TOML}: the best settings (ucfpipe train --config {out / BEST_TOML} --out RUN_DIR)")
    return result


def _default_outcome(study, default, base: TrainConfig, seed: int, out: Path) -> dict:
    """Train's defaults on validation and test: trial 0's run, or, when it ran on a worker elsewhere (its run is
    not here) or never completed (killed, and the study reached K before it ran again), the defaults trained
    here on the same validation groups."""
    if default is None:  # the trial the defaults were last enqueued as (a failed trial keeps its parameters)
        default = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("default")][-1]
    run_dir = Path(default.user_attrs.get("run", out / "trials" / str(default.number)))
    validation = default.value
    if validation is None or not (run_dir / "run.json").is_file():
        run_dir = out / "default"
        validation = finals.retrain(base, default.params, seed, run_dir)["best"]
    return {"trial": default.number, "params": default.params, "validation": validation,
            "test": finals.test_scores(run_dir), "run": str(run_dir)}


def _show(out: Path, result: dict, log) -> None:
    """The default-vs-best table, as `ucfpipe report DIR` prints it."""
    log(study_report.text(out, study_report.read_tune(out), result).rstrip("\n"))
