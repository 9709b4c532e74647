"""`extract --engine ray` under the faults the Ray issue names: a busy decode worker or model actor killed, the
driver killed, a node of a two-node cluster lost, Ctrl-C and SIGTERM; each ends with every clip once (equal to
the local engine's cache) and no Ray process left behind."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers import assert_one_line_error, invoke
from ray_helpers import Run, assert_every_clip_once, data_flags, descendants, end_tree, ray_env, ray_process, wait_gone
from ray_helpers import ray_token  # noqa: F401  (autouse: every test runs with this session's Ray token)

pytestmark = pytest.mark.slow
# 48 clips, 8 frames of 64x64: long enough (seconds of VGG16 on two cores; a shard of 4 clips about every half
# second) that a kill sent as soon as the first shard is written lands mid-run, and no longer.
FAULT = ["--frames", "8", "--size", "64", "--weights", "none", "--shard-clips", "4", "--shard-seconds", "1", "--no-progress"]


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory) -> dict:
    from ucfpipe.datasets.synth import generate_dataset

    # Frames of 160x120, 80 to 160 of them: decoding takes long enough that a busy decode worker can be caught.
    return generate_dataset(tmp_path_factory.mktemp("ray-faults"), num_classes=2, num_groups=3, clips_per_group=8,
                            frame_size=(160, 120), min_frames=80, max_frames=160, seed=1)


@pytest.fixture(scope="module")
def fault_reference(fault_data, tmp_path_factory) -> Path:
    """The fault runs' clips through the local engine: what every Ray run must end with."""
    out = tmp_path_factory.mktemp("ray-ref") / "local"
    result = invoke("extract", *data_flags(fault_data), *FAULT, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# -- faults -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["MapBatches(Backbone)", "MapBatches(decode_batch)"], ids=["model-actor", "decode-worker"])
def test_a_busy_worker_killed_mid_run_and_the_run_completes(fault_data, fault_reference, tmp_path, victim):
    run = Run([*data_flags(fault_data), *FAULT, "--engine", "ray"], tmp_path / "out")
    try:
        if "Backbone" in victim:  # the model actor once it has written clips; a decode worker whenever busy
            run.wait_for(run.shards, 180, "first shard")
        pid = run.wait_for(lambda: ray_process(victim)(run), 180, f"busy {victim} process")
        os.kill(pid, signal.SIGKILL)
        assert not (run.out / "manifest.json").exists(), "the kill came after the work was done"
        assert len(run.shards()) * 4 < fault_data["num_clips"]
        code, output = run.finish()
        assert code == 0, output
    finally:
        run.close()
    assert_every_clip_once(run.out, fault_data, reference=fault_reference)


def test_driver_killed_then_a_rerun_resumes(fault_data, fault_reference, tmp_path):
    run = Run([*data_flags(fault_data), *FAULT, "--engine", "ray"], tmp_path / "out")
    try:
        run.wait_for(run.shards, 180, "first shard")
        os.kill(run.process.pid, signal.SIGKILL)
        run.process.wait(timeout=30)
    finally:
        # The cluster ray.init started shares the driver's fate: raylet, GCS and workers die with it at once (30 s
        # allowed), Ray's runtime-env and dashboard agents only once they notice (measured: about 60 s), so this
        # test ends those two by pid rather than wait for them.
        run.close(30, lingering=("RuntimeEnvAgent", "DashboardAgent", "runtime_env/agent", "dashboard/agent"))
    # What the killed command could not remove: the temporary directory of the cluster it started.
    for directory in {m.group(0) for line in run.seen.values() for m in re.finditer(r"/tmp/ucfpipe-ray-\w+", line)}:
        shutil.rmtree(directory, ignore_errors=True)
    kept = len(run.shards())
    assert 0 < kept * 4 < fault_data["num_clips"]
    rerun = Run([*data_flags(fault_data), *FAULT, "--engine", "ray"], tmp_path / "out")
    try:
        code, output = rerun.finish()
    finally:
        rerun.close()
    assert code == 0, output
    assert f"already in {tmp_path / 'out'}" in output and "(0 already" not in output, output
    assert_every_clip_once(run.out, fault_data, reference=fault_reference)


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_keep_finished_clips(fault_data, fault_reference, tmp_path, signum, status):
    run = Run([*data_flags(fault_data), *FAULT, "--engine", "ray"], tmp_path / "out")
    try:
        run.wait_for(run.shards, 180, "first shard")
        os.kill(run.process.pid, signum)
        code, output = run.finish(60)
    finally:
        run.close()
    assert code == status, output
    assert "interrupted" in output and "Traceback" not in output, output
    assert run.shards()
    rerun = invoke("extract", *data_flags(fault_data), *FAULT, "--engine", "local", "--out", run.out)
    assert rerun.exit_code == 0, rerun.output  # the engines share the cache: either one resumes it
    assert_every_clip_once(run.out, fault_data, reference=fault_reference)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_lost_node_the_run_completes_or_says_so_and_a_rerun_resumes(fault_data, fault_reference, tmp_path):
    """Two nodes on loopback, each `ray start --block` in its own temporary directory; the second is killed
    (kill -9 of its whole process tree) while the run uses it."""
    port = _free_port()
    common = ["--block", "--num-cpus", "2", "--disable-usage-stats"]
    ray_cli = str(Path(sys.executable).with_name("ray"))
    nodes = []
    # Short paths: Ray's socket names must fit in 107 bytes.
    head_dir, worker_dir = Path(f"/tmp/ucfp-{uuid.uuid4().hex[:6]}"), Path(f"/tmp/ucfp-{uuid.uuid4().hex[:6]}")
    try:
        nodes.append(subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--temp-dir", str(head_dir),
                                       "--include-dashboard", "false", *common],
                                      env=ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_port(port, 60)
        nodes.append(subprocess.Popen([ray_cli, "start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(worker_dir), *common],
                                      env=ray_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_nodes(port, 2, 90)
        worker_node = nodes[1]
        run = Run([*data_flags(fault_data), *FAULT, "--engine", "ray", "--address", f"127.0.0.1:{port}"], tmp_path / "out")
        try:
            busy = lambda: [p for p, line in descendants(worker_node.pid).items() if "MapBatches(" in line]  # noqa: E731
            run.wait_for(busy, 180, "work on the second node")
            end_tree(worker_node.pid)
            assert not (run.out / "manifest.json").exists(), "the node was lost after the work was done"
            started = time.monotonic()
            code, output = run.finish(240)
        finally:
            run.close()
        assert time.monotonic() - started < 200  # never a silent hang
        print(f"after the node was lost the run {'completed' if code == 0 else 'ended in one line: ' + output.splitlines()[-1]}")
        if code != 0:  # ended in one line; a rerun on what is left resumes
            assert_one_line_error(type("R", (), {"exit_code": code, "output": output})(), "Ray run")
            rerun = Run([*data_flags(fault_data), *FAULT, "--engine", "ray", "--address", f"127.0.0.1:{port}"], tmp_path / "out")
            try:
                code, output = rerun.finish()
            finally:
                rerun.close()
            assert code == 0, output
        assert_every_clip_once(tmp_path / "out", fault_data, reference=fault_reference)
    finally:
        for node in nodes:
            tree = [*descendants(node.pid), node.pid]
            end_tree(node.pid)
            node.wait(timeout=30)
            assert not wait_gone(tree, 90), "a Ray node outlived the test"
        for directory in (head_dir, worker_dir):
            shutil.rmtree(directory, ignore_errors=True)


def _wait_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the head node did not listen on {port} within {seconds} s")


def _wait_nodes(port: int, count: int, seconds: float) -> None:
    script = ("import ray; ray.init(address='127.0.0.1:%d', logging_level=40, log_to_driver=False); "
              "print(sum(n['Alive'] for n in ray.nodes()))" % port)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-c", script], env=ray_env(), capture_output=True, text=True, timeout=60)
        if done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"{count} Ray nodes did not join within {seconds} s")


