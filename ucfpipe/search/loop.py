"""Run trials until the study holds exactly K finished (complete or pruned) trials, with any number of peer
processes on the same storage. Optuna's MaxTrialsCallback overshoots by the trials in flight; here a trial may
run only if fewer than K live trials have a smaller number (numbers are handed out under the study's lock), and
each trial runs through `study.optimize(n_trials=1)`, the only way Optuna keeps its heartbeat."""

from __future__ import annotations

import logging
import re
import time

from ucfpipe.core import interrupts
from ucfpipe.search.objective import InvalidTrial, tag_worker

_SURPLUS: set[int] = set()


class Surplus(Exception):
    """Started after K others (numbered before it) already counted: failed at once, not run."""


class _DropSurplusLog(logging.Filter):
    def filter(self, record):
        found = re.match(r"Trial (\d+) failed", record.getMessage())
        return not (found and int(found[1]) in _SURPLUS)


def live_states():
    """The states of trials that count towards K or may still: finished, running, waiting."""
    from optuna.trial import TrialState

    return TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING


def counts(study) -> dict:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    found = {name: 0 for name in names.values()}
    for trial in trials:
        if trial.state in names and not trial.user_attrs.get("surplus"):
            found[names[trial.state]] += 1
    found["finished"] = found["complete"] + found["pruned"]
    return found


def run_until(study, objective, trials: int, deadline: float | None = None, on_trial=None, poll: float = 1.0) -> dict:
    """Trials until the study has `trials` finished ones (or `deadline`, time.time(), passes). `on_trial(counts)`
    after each trial that ends anywhere."""
    import optuna

    live = live_states()
    logging.getLogger("optuna.study._optimize").addFilter(_DropSurplusLog())

    def guarded(trial):
        ahead = sum(t.number < trial.number for t in study.get_trials(deepcopy=False, states=live))
        if ahead >= trials:
            _SURPLUS.add(trial.number)
            trial.set_user_attr("surplus", True)
            raise Surplus()
        tag_worker(trial)
        return objective(trial)

    seen = None
    while True:
        interrupts.check()
        optuna.storages.fail_stale_trials(study)  # a dead peer's RUNNING trial -> FAIL (after the grace period)
        now = counts(study)
        ended = now["finished"] + now["failed"]
        if on_trial is not None and seen is not None and ended != seen:
            on_trial(now)
        seen = ended
        if now["finished"] >= trials or (deadline is not None and time.time() >= deadline):
            return now
        if now["finished"] + now["running"] + now["waiting"] >= trials:
            time.sleep(poll)  # the rest run elsewhere; they may still fail, then this process takes them
            continue
        study.optimize(guarded, n_trials=1, catch=(Surplus, InvalidTrial))
