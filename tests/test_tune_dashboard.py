"""optuna-dashboard opens a finished `ucfpipe tune` study: started on loopback, the trials (values, trial 0's
`default` attribute, each trial's `worker`) read back through its HTTP API, then stopped by pid. Skipped with one
line where optuna-dashboard is not installed."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import invoke
from tune_helpers import tune_args

pytest.importorskip("optuna", reason="the tune extra (optuna) is not installed")
pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (the test extra has it)")


@pytest.mark.slow
def test_optuna_dashboard_reads_the_finished_study(tune_setup):
    out = tune_setup["tmp"] / "search"
    invoke(*tune_args(tune_setup, "--out", out, trials=2), exit_code=0)
    url = json.loads((out / "tune.json").read_text())["storage"]
    program = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dashboard = subprocess.Popen([program, url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return json.load(answer)

    try:
        deadline = time.monotonic() + 60
        while True:
            assert dashboard.poll() is None, dashboard.stdout.read().decode()
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.2)
        assert [s["study_name"] for s in studies] == [json.loads((out / "tune.json").read_text())["study"]]
        tags = {a["key"]: a["value"] for a in studies[0]["user_attrs"]}
        assert {"fingerprint", "split", "space_hash", "seed", "monitor"} <= set(tags)
        detail = get(f"/api/studies/{studies[0]['study_id']}")
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["number"] for t in trials] == [0, 1] and all(t["state"] in ("Complete", "Pruned") for t in trials)
        attrs = {a["key"]: a["value"] for a in trials[0]["user_attrs"]}
        assert attrs["default"] == "True" and ":" in attrs["worker"]
        assert trials[0]["intermediate_values"][0]["step"] == 0
        result = json.loads((out / "result.json").read_text())
        assert detail["best_trials"][0]["number"] == result["best"]["trial"]
    finally:
        dashboard.send_signal(signal.SIGTERM)
        try:
            dashboard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            dashboard.kill()
            dashboard.wait()
