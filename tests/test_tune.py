"""`ucfpipe tune` end to end on the tiny synthetic cache: K trials, best.toml, best/, result.json; a rerun prints
without training; kill -9 mid-trial then the same command; two processes on one SQLite study; the test list
unreadable during the search; another cache's study refused; bad input in one line, nothing written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_one_line_error, invoke
from tune_helpers import HEARTBEAT, TRAIN, spawn, study_trials, tune_args

pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")

def states_of(trials) -> list[str]:
    return [t.state.name for t in trials if not t.user_attrs.get("surplus")]


@pytest.mark.slow  # a whole search: trials, the best retrained, the test list scored
def test_a_search_finishes_k_trials_retrains_the_best_and_a_rerun_only_prints(tune_setup):
    out = tune_setup["tmp"] / "search"
    result = invoke(*tune_args(tune_setup, "--out", out, "--ensemble-top", 2), exit_code=0)
    assert "trial 0 complete" in result.output and "default (train's settings)" in result.output, result.output
    tune = json.loads((out / "tune.json").read_text())
    assert tune["trials"] == 3 and tune["storage"] == f"sqlite:///{out / 'study.db'}" and "cell" in tune["space"]
    trials = study_trials(tune["storage"])
    assert sum(s in ("COMPLETE", "PRUNED") for s in states_of(trials)) == 3
    first = trials[0]
    assert first.user_attrs["default"] is True and first.params == {"cell": "lstm", "units": 8, "dropout": 0.2,
                                                                     "learning_rate": 3e-3}
    assert {t.user_attrs["seed"] for t in trials} == {0, 1, 2} and all(":" in t.user_attrs["worker"] for t in trials)
    assert all((out / "trials" / str(t.number) / "run.json").is_file() for t in trials)
    # TensorBoard gets every trial's curves under DIR/trials/ (tensorboard --logdir DIR/trials)
    assert all(list((out / "trials" / str(t.number) / "tensorboard" / "validation").glob("events.out.tfevents.*"))
               for t in trials)
    result_json = json.loads((out / "result.json").read_text())
    assert result_json["finished"] == 3 and result_json["default"]["trial"] == 0
    assert set(result_json["best"]["test"]) == {"top1", "top5", "mean_class"}
    assert result_json["best"]["validation"] >= result_json["default"]["validation"]
    assert (out / "best" / "metrics.json").is_file() and (out / "trials" / "0" / "metrics.json").is_file()
    # --ensemble-top 2: the two best completed trials retrained as one ensemble, scored on the test list
    ranked = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value, reverse=True)
    assert result_json["ensemble"]["trials"] == [t.number for t in ranked[:2]]
    members = json.loads((out / "ensemble" / "ensemble.json").read_text())["members"]
    assert len(members) == 2 and (out / "ensemble" / "metrics.json").is_file()
    assert set(result_json["ensemble"]["test"]) == {"top1", "top5", "mean_class"} and "ensemble of the 2 best" in result.output
    header = (out / "trials.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["number", "state", "value"] and {"cell", "units", "worker", "seed", "seconds"} <= set(header)
    # best.toml is what `train --config` takes
    from ucfpipe.config import TrainConfig, load_config

    best = load_config(TrainConfig, out / "best.toml", {"out": str(tune_setup["tmp"] / "again")})
    assert best.units == result_json["best"]["params"]["units"] and best.seed == 0
    # a rerun of the finished search prints its result, trains nothing
    before = sorted(p.name for p in (out / "trials").iterdir())
    again = invoke(*tune_args(tune_setup, "--out", out, "--ensemble-top", 2), exit_code=0)
    assert "finished earlier" in again.output and "trial 0 complete" not in again.output, again.output
    assert sorted(p.name for p in (out / "trials").iterdir()) == before
    assert len(study_trials(tune["storage"])) == len(trials)


@pytest.mark.slow  # a whole search: trials, the best retrained, the test list scored
def test_timeout_starts_no_trial_after_it_and_retrains_the_best_so_far(tune_setup):
    out = tune_setup["tmp"] / "search"
    started = time.monotonic()
    invoke(*tune_args(tune_setup, "--out", out, "--timeout", 2, trials=50), exit_code=0)
    result = json.loads((out / "result.json").read_text())
    assert 1 <= result["finished"] < 50 and (out / "best" / "metrics.json").is_file()
    assert time.monotonic() - started < 120  # a handful of tiny trials, not fifty


def test_the_default_row_trains_the_defaults_when_their_trial_never_completed(tune_setup):
    """Trial 0 killed and the study's K reached before the defaults ran again: the table still has them, trained
    here on the same validation groups."""
    import optuna
    from optuna.trial import TrialState

    from helpers import tiny_config
    from ucfpipe.search import tune

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"units": 8}, user_attrs={"default": True})
    trial = study.ask({"units": optuna.distributions.CategoricalDistribution([8, 16])})
    study.tell(trial, state=TrialState.FAIL)
    base = tiny_config(tune_setup["cache"], tune_setup["splits"], "")
    row = tune._default_outcome(study, None, base, 0, tune_setup["tmp"])
    assert row["trial"] == 0 and row["params"] == {"units": 8} and 0 <= row["validation"] <= 1
    assert row["run"] == str(tune_setup["tmp"] / "default") and (tune_setup["tmp"] / "default" / "metrics.json").is_file()
    assert set(row["test"]) == {"top1", "top5", "mean_class"}


# -- bad input: one line, exit 2, nothing written ------------------------------------------------------------------
@pytest.mark.parametrize("more, fragments", [
    (["--trials", "0"], ["--trials", "positive"]),
    (["--timeout", "-5"], ["--timeout", "positive"]),
    (["--jobs", "0"], ["--jobs", "positive"]),
    (["--storage", "notadb://x"], ["--storage notadb://x"]),
    (["--storage", "sqlite:/relative.db"], ["--storage sqlite:/relative.db"]),
    (["--storage", "sqlite:////no/such/folder/s.db"], ["/no/such/folder", "does not exist"]),
    (["--storage", "postgresql+psycopg2://u@127.0.0.1:1/db"], ["--storage", "cannot open the database"]),
    (["--worker", "--storage", "sqlite:////tmp/x.db"], ["--worker", "drop --out"]),
    (["--ensemble-top", "1"], ["--ensemble-top", "at least 2"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tune_setup, more, fragments):
    out = tune_setup["tmp"] / "search"
    result = invoke(*tune_args(tune_setup, "--out", out), *more)
    assert_one_line_error(result, *fragments)
    assert not out.exists() and not Path("/tmp/x.db").exists()


def test_no_out_without_worker_and_a_cache_without_the_split_clips_are_refused(tune_setup, synth_cache):
    assert_one_line_error(invoke(*tune_args(tune_setup)), "--out DIR", "--worker")
    from helpers import copy_cache
    from ucfpipe import datasets
    from ucfpipe.cache.store import FeatureStore

    store = FeatureStore(synth_cache)
    split = datasets.read_split(datasets.of_cache(store.config), tune_setup["splits"], 1)
    partial = copy_cache(synth_cache, tune_setup["tmp"] / "partial", drop={split.test[0].video_id})
    out = tune_setup["tmp"] / "search"
    result = invoke(*tune_args({**tune_setup, "cache": partial}, "--out", out))
    assert_one_line_error(result, "not in the feature cache")
    assert not out.exists()


def test_a_study_of_another_cache_or_split_is_refused(tune_setup, synth_cache):
    import optuna

    from ucfpipe.cache.store import FeatureStore

    url = f"sqlite:///{tune_setup['tmp'] / 'shared.db'}"
    real = FeatureStore(synth_cache).fingerprint
    for name, tags, differs in (("other-cache", {"fingerprint": "0123456789abcdef", "split": 1}, "fingerprint"),
                                ("other-split", {"fingerprint": real, "split": 2}, "split 2")):
        study = optuna.create_study(storage=url, study_name=name, direction="maximize")
        for key, value in {**tags, "seed": 0, "monitor": "val_accuracy", "space_hash": "x"}.items():
            study.set_user_attr(key, value)
        result = invoke(*tune_args(tune_setup, "--worker", "--storage", url, "--study", name))
        assert_one_line_error(result, f"study {name!r} was made for another search", differs)
        assert len(study.get_trials()) == 0


# -- honest: the test list is not read during the search -------------------------------------------------------------
@pytest.mark.slow  # a whole search: trials, the best retrained, the test list scored
def test_the_test_clips_are_unreadable_during_the_search_and_read_once_after(tune_setup, monkeypatch):
    from ucfpipe import datasets
    from ucfpipe.cache.store import FeatureStore
    from ucfpipe.search import best

    store = FeatureStore(tune_setup["cache"])
    test_ids = {c.video_id for c in datasets.read_split(datasets.of_cache(store.config), tune_setup["splits"], 1).test}
    searching = {"on": True, "refused": 0}
    read = FeatureStore._read

    def guarded(self, dataset, video_ids, view):
        if searching["on"] and test_ids & set(video_ids):
            searching["refused"] += 1
            raise OSError("the test clips' features are unreadable during the search")
        return read(self, dataset, video_ids, view)

    scores = best.test_scores

    def after_search(run_dir):
        searching["on"] = False
        return scores(run_dir)

    monkeypatch.setattr(FeatureStore, "_read", guarded)
    monkeypatch.setattr(best, "test_scores", after_search)
    out = tune_setup["tmp"] / "search"
    invoke(*tune_args(tune_setup, "--out", out, trials=2), exit_code=0)
    assert json.loads((out / "result.json").read_text())["best"]["test"]["top1"] >= 0
    assert searching == {"on": False, "refused": 0}


# -- processes: kill -9 and resumption; two on one study ------------------------------------------------------------
def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial_with_an_epoch(db: Path):
    """The number of a RUNNING trial past trial 0 that has reported an epoch, or None."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as con:
            rows = con.execute("select t.number from trials t join trial_intermediate_values v on v.trial_id = t.trial_id "
                               "where t.state = 'RUNNING' and t.number >= 1").fetchall()
    except sqlite3.OperationalError:
        return None
    return rows[0][0] if rows else None


@pytest.mark.slow
def test_kill_9_mid_trial_then_the_same_command_finishes_exactly_k(tune_setup, warm):
    out = tune_setup["tmp"] / "search"
    tune_setup["config"].write_text(TRAIN.replace("epochs = 2", "epochs = 8"))
    args = tune_args(tune_setup, "--out", out, trials=3)
    first = spawn(warm, args)
    try:
        killed = wait_for(lambda: running_trial_with_an_epoch(out / "study.db"), 300, "a running trial with an epoch")
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert any(p.name.startswith(".") for p in (out / "trials").iterdir())  # the killed trial's half-made run
    second = spawn(warm, args)
    output, _ = second.communicate(timeout=600)
    assert second.returncode == 0, output
    trials = study_trials(f"sqlite:///{out / 'study.db'}")
    states = {t.number: t.state.name for t in trials}
    assert states[killed] == "FAIL" and sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 3, states
    assert max(states) == 3  # one new trial took the killed one's place; the killed one was not run again
    assert not any(p.name.startswith(".") for p in (out / "trials").iterdir())
    assert not (out / "trials" / str(killed)).exists()


# Four processes at a barrier, each popping the study's one enqueued trial (what `study.ask` does first), ten
# times over: each time exactly one may get it. Forked from a helper that loads no Keras.
POP_AT_ONCE = """
import multiprocessing, sys
import optuna
from ucfpipe.search.study import open_storage

def pop(url, barrier, out):
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    barrier.wait()
    out.put(study._pop_waiting_trial_id())

optuna.logging.set_verbosity(optuna.logging.ERROR)
context, takers = multiprocessing.get_context("fork"), []
for round in range(10):
    url = f"sqlite:///{sys.argv[1]}/study{round}.db"
    optuna.create_study(study_name="s", storage=open_storage(url)).enqueue_trial({"x": 1})
    barrier, out = context.Barrier(4), context.Queue()
    processes = [context.Process(target=pop, args=(url, barrier, out)) for _ in range(4)]
    for process in processes:
        process.start()
    takers.append(sum(out.get(timeout=60) is not None for _ in processes))
    for process in processes:
        process.join(timeout=60)
print(takers)
"""


@pytest.mark.slow
def test_an_enqueued_trial_on_sqlite_is_taken_by_one_process_only(tmp_path):
    # SQLite takes no row locks: without the write lock first (study.serialise_sqlite), two to four of the four
    # took trial 0 in about half the rounds, and the second to finish crashed its tune with "Cannot tell a COMPLETE trial".
    done = subprocess.run([sys.executable, "-c", POP_AT_ONCE, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [1] * 10, "processes that took the one enqueued trial, each round"


@pytest.mark.slow
def test_two_processes_on_one_sqlite_study_finish_k_trials_together(tune_setup, monkeypatch, warm):
    out = tune_setup["tmp"] / "search"
    monkeypatch.setenv("UCFPIPE_TUNE_HEARTBEAT", HEARTBEAT)  # this process's, as spawn() gives the helper
    url = f"sqlite:///{tune_setup['tmp'] / 'shared.db'}"
    # The helper in a process of its own, the command in this one: two processes on one study either way.
    helper = spawn(warm, tune_args(tune_setup, "--worker", "--storage", url, "--trials-dir", tune_setup["tmp"] / "worker-runs", trials=4))
    try:
        lead = invoke(*tune_args(tune_setup, "--out", out, "--storage", url, trials=4))
    finally:
        output = helper.communicate(timeout=600)[0]
    assert lead.exit_code == 0 and helper.returncode == 0, (lead.output, output)
    trials = [t for t in study_trials(url) if not t.user_attrs.get("surplus")]
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and len({t.number for t in finished}) == 4
    host = os.uname().nodename
    assert {t.user_attrs["worker"] for t in finished} <= {f"{host}:{os.getpid()}", f"{host}:{helper.pid}"}
    assert json.loads((out / "result.json").read_text())["finished"] == 4


@pytest.mark.slow
def test_sigterm_mid_trial_fails_that_trial_at_once_exits_143_and_leaves_no_half_made_run(tune_setup, warm):
    out = tune_setup["tmp"] / "search"
    tune_setup["config"].write_text(TRAIN.replace("epochs = 2", "epochs = 8"))
    first = spawn(warm, tune_args(tune_setup, "--out", out, trials=3))
    stopped = wait_for(lambda: running_trial_with_an_epoch(out / "study.db"), 300, "a running trial with an epoch")
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 143, output
    assert "interrupted" in output and "Traceback" not in output, output
    states = {t.number: t.state.name for t in study_trials(f"sqlite:///{out / 'study.db'}")}
    assert states[stopped] == "FAIL"  # at once: no heartbeat grace needed
    assert not any(p.name.startswith(".") for p in (out / "trials").iterdir())


@pytest.mark.slow
def test_jobs_2_runs_a_worker_beside_the_command_into_the_same_trials_folder(tune_setup, monkeypatch):
    out = tune_setup["tmp"] / "search"
    monkeypatch.setenv("UCFPIPE_TUNE_HEARTBEAT", HEARTBEAT)  # as spawn() sets it: the worker it starts inherits it
    invoke(*tune_args(tune_setup, "--out", out, "--jobs", "2", trials=4), exit_code=0)
    finished = [t for t in study_trials(f"sqlite:///{out / 'study.db'}") if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    assert all((out / "trials" / str(t.number) / "run.json").is_file() for t in finished)
    assert len({t.user_attrs["worker"] for t in finished}) >= 1
