"""`extract --engine ray`: the same cache as the local engine on a local Ray cluster, decode and model as two Ray
Data stages, and the faults the issue names (a busy worker or actor killed, the driver killed, a node lost,
Ctrl-C and SIGTERM), each ending with every clip once and no Ray process left behind.

Every Ray process a test starts is a descendant of a process the test started (the CLI, or `ray start --block`),
found through /proc and ended by pid; every wait is bounded."""

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

import numpy as np
import pytest

from helpers import REPO, assert_one_line_error, invoke

pytestmark = pytest.mark.slow
# 48 clips, 8 frames of 96x96: long enough (seconds of VGG16 on two cores) that a kill lands mid-run.
FAULT = ["--frames", "8", "--size", "96", "--weights", "none", "--shard-clips", "4", "--shard-seconds", "1", "--no-progress"]
EQUAL = {"frames": 4, "size": 32, "weights": "none", "seed": 0}


def _env(**extra) -> dict:
    # Token auth on, with a token of this test run only (Ray 2.60 wants one on every node; none lands in ~/.ray).
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN,
            "TF_CPP_MIN_LOG_LEVEL": "2", "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "90", **extra}


TOKEN = uuid.uuid4().hex


@pytest.fixture(autouse=True)
def _token(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)


# -- processes, through /proc ---------------------------------------------------------------------------------
def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every living descendant of `pid`."""
    children: dict[int, list[int]] = {}
    lines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            lines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = lines.get(child, "")
        todo += children.get(child, [])
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids, seconds: float = 30.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def end_tree(pid: int) -> None:
    """kill -9 `pid` and every descendant (what a failed test leaves); by pid only."""
    for child in [*descendants(pid), pid]:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Run:
    """`ucfpipe extract` in its own session, its Ray processes remembered as they appear."""

    def __init__(self, args, out: Path, env=None):
        self.out = out
        self.process = subprocess.Popen([sys.executable, "-m", "ucfpipe.cli", "extract", *map(str, args), "--out", str(out)],
                                        cwd=REPO, env=env or _env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.seen: dict[int, str] = {}

    def watch(self) -> dict[int, str]:
        self.seen.update(descendants(self.process.pid))
        return self.seen

    def wait_for(self, condition, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.watch()
            found = condition()
            if found:
                return found
            if self.process.poll() is not None:
                pytest.fail(f"the run ended before {what}:\n{self.process.stdout.read()}")
            time.sleep(0.1)
        pytest.fail(f"no {what} within {seconds} s")

    def finish(self, seconds: float = 240.0) -> tuple[int, str]:
        try:
            output, _ = self.process.communicate(timeout=seconds)
        except subprocess.TimeoutExpired:
            end_tree(self.process.pid)
            pytest.fail(f"the run did not end within {seconds} s")
        return self.process.returncode, output

    def shards(self) -> list[Path]:
        return sorted(self.out.glob("shard-*.h5"))

    def close(self, seconds: float = 30.0):
        if self.process.poll() is None:
            end_tree(self.process.pid)
        self.process.wait(timeout=30)
        left = wait_gone(list(self.seen), seconds)
        if left:
            for pid in left:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"Ray processes outlived the run: {[self.seen[p][:80] for p in left]}")


def ray_process(fragment: str):
    return lambda run: next((pid for pid, line in run.seen.items() if fragment in line and alive(pid)), None)


# -- data -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("ray-small"), num_classes=2, num_groups=3, clips_per_group=2,
                            frame_size=(64, 48), seed=0)


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory) -> dict:
    from ucfpipe.datasets.synth import generate_dataset

    # Frames of 160x120, 80 to 160 of them: decoding takes long enough that a busy decode worker can be caught.
    return generate_dataset(tmp_path_factory.mktemp("ray-faults"), num_classes=2, num_groups=3, clips_per_group=8,
                            frame_size=(160, 120), min_frames=80, max_frames=160, seed=1)


def data_flags(data) -> list[str]:
    return ["--videos", data["videos"], "--splits", data["splits"]]


def assert_every_clip_once(out: Path, data: dict, reference: Path | None = None) -> None:
    from ucfpipe import FeatureStore
    from ucfpipe.datasets import all_clips

    listed = sorted(c.video_id for c in all_clips("ucf101", data["splits"]))
    with FeatureStore(out) as store:  # refuses a cache whose shards repeat a clip
        assert sorted(store.video_ids) == listed
        if reference is not None:
            with FeatureStore(reference) as local:
                assert store.fingerprint == local.fingerprint
                np.testing.assert_array_equal(store.features(listed), local.features(listed))


@pytest.fixture(scope="module")
def fault_reference(fault_data, tmp_path_factory) -> Path:
    """The fault runs' clips through the local engine: what every Ray run must end with."""
    out = tmp_path_factory.mktemp("ray-ref") / "local"
    result = invoke("extract", *data_flags(fault_data), *FAULT, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# -- the same cache ---------------------------------------------------------------------------------------------
def test_ray_engine_writes_the_local_engines_cache(small, tmp_path):
    from ucfpipe.config import ExtractConfig
    from ucfpipe.stage_one import extract

    summaries = {}
    for engine in ("local", "ray"):
        config = ExtractConfig(videos=small["videos"], splits=small["splits"], out=str(tmp_path / engine), engine=engine, **EQUAL)
        summaries[engine] = extract.run(config, progress=False, log=lambda *_: None)
    assert summaries["ray"]["extracted"] == summaries["local"]["extracted"] == small["num_clips"]
    assert_every_clip_once(tmp_path / "ray", small, reference=tmp_path / "local")
    again = extract.run(ExtractConfig(videos=small["videos"], splits=small["splits"], out=str(tmp_path / "ray"),
                                      engine="ray", **EQUAL), progress=False, log=lambda *_: None)
    assert again["extracted"] == 0 and again["cached"] == small["num_clips"]  # a rerun finds nothing to do
    assert not descendants(os.getpid()), "the Ray cluster the run started outlived it"


def test_a_ray_run_prints_none_of_rays_own_warnings(small, tmp_path):
    from ucfpipe.stage_one import ray_engine

    # PYTHONWARNINGS=default: the DeprecationWarnings a command line hides by default would print too
    run = Run([*data_flags(small), "--frames", "4", "--size", "32", "--weights", "none", "--no-progress", "--engine", "ray"],
              tmp_path / "out", env=_env(PYTHONWARNINGS="default"))
    try:
        code, output = run.finish()
    finally:
        run.close()
    assert code == 0, output
    for text in [*ray_engine.RAY_WARNINGS, "Progress bars disabled", "has constructor arguments in the object store"]:
        assert text not in output, output
    assert output.splitlines()[0].startswith("extracting") and output.splitlines()[-1].startswith("done:"), output


def test_decode_and_model_are_two_ray_stages(small):
    """Ray Data fuses a task stage into the next actor stage when their resources are equal: decoding would
    then run inside the model actors. The plan keeps them apart."""
    import ray

    from ucfpipe import datasets
    from ucfpipe.config import ExtractConfig
    from ucfpipe.stage_one import ray_cluster, ray_engine

    config = ExtractConfig(videos=small["videos"], splits=small["splits"], engine="ray", **EQUAL).validate()
    todo = list(datasets.all_clips("ucf101", config.splits))
    with ray_cluster.cluster("") as connected:
        plan = ray_engine.physical_plan(ray_engine.build_dataset(connected, todo, config, Path(config.videos)))
        assert plan == ["Input", "MapBatches(decode_batch)", "MapBatches(Backbone)"], plan
        # the check can fail: the same stages with equal resources are fused
        fused = connected.data.from_items([{"a": 1}]).map_batches(ray_engine.decode_batch, num_cpus=1).map_batches(
            ray_engine.Backbone, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
        assert ray_engine.physical_plan(fused)[-1] == "MapBatches(decode_batch)->MapBatches(Backbone)"
    assert not descendants(os.getpid())


def test_workers_that_cannot_read_the_videos_are_one_line(small, tmp_path):
    from ucfpipe.core.errors import UcfpipeError
    from ucfpipe.stage_one import ray_cluster

    with ray_cluster.cluster("") as connected:
        ray_cluster.check_workers_read(connected, Path(small["videos"]), "GrowingDisk/" + os.listdir(Path(small["videos"]) / "GrowingDisk")[0])
        with pytest.raises(UcfpipeError, match=r"the Ray workers on .* cannot read /nowhere/a\.avi \(No such file"):
            ray_cluster.check_workers_read(connected, Path("/nowhere"), "a.avi")


# -- bad input --------------------------------------------------------------------------------------------------
def test_engine_ray_with_shard_is_one_line(small, tmp_path):
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--shard", "0/2", "--out", tmp_path / "out")
    assert_one_line_error(result, "drop --shard 0/2")
    assert not (tmp_path / "out").exists()


def test_ray_not_installed_names_the_extra(small, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is not installed
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--out", tmp_path / "out")
    assert_one_line_error(result, "pip install 'ucfpipe[ray]'")
    assert not (tmp_path / "out").exists()


def test_an_address_that_does_not_answer_is_one_line_within_30_s(small, tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--address", f"127.0.0.1:{port}", "--out", tmp_path / "out")
    assert time.monotonic() - started < 30
    assert_one_line_error(result, f"the Ray cluster at 127.0.0.1:{port} does not answer")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def web_server():
    """A loopback HTTP server (what the dashboard's port is): it accepts connections and answers HTTP/1."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_listener():
    """A loopback port that accepts connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener


def test_an_address_that_is_a_web_server_is_one_line_at_once(small, tmp_path, web_server):
    started = time.monotonic()
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--address", web_server, "--out", tmp_path / "out")
    assert time.monotonic() - started < 10  # ray.init alone retries it for minutes
    assert_one_line_error(result, f"{web_server} is not a Ray head node (it answered, but not as a gRPC server)")
    assert not (tmp_path / "out").exists()


def test_an_address_that_says_nothing_is_one_line_well_within_30_s(small, tmp_path, silent_listener):
    address = "127.0.0.1:%d" % silent_listener.getsockname()[1]
    started = time.monotonic()
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--address", address, "--out", tmp_path / "out")
    assert time.monotonic() - started < 15
    assert_one_line_error(result, f"{address} is not a Ray head node (it said nothing within 5 s)")


def test_address_auto_without_a_cluster_says_how_to_start_one(small, tmp_path, monkeypatch):
    import functools

    from ray._private import services

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # No cluster found, whatever other tests run on this machine (Ray clears this function's cache)
    monkeypatch.setattr(services, "find_gcs_addresses", functools.lru_cache(lambda: []))
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    result = invoke("extract", *data_flags(small), "--engine", "ray", "--address", "auto", "--out", tmp_path / "out")
    assert_one_line_error(result, "--address auto: no Ray cluster is running on this machine; start one with `ray start --head`")
    assert "drop --address" in result.output and "RAY_ADDRESS" not in result.output


def test_sigterm_while_checking_an_address_ends_at_once(small, tmp_path, silent_listener):
    address = "127.0.0.1:%d" % silent_listener.getsockname()[1]
    run = Run([*data_flags(small), "--engine", "ray", "--address", address, "--no-progress"], tmp_path / "out")
    try:
        silent_listener.settimeout(120)
        connection, _ = silent_listener.accept()  # the check is waiting for an answer now
        os.kill(run.process.pid, signal.SIGTERM)
        started = time.monotonic()
        code, output = run.finish(30)
        connection.close()
    finally:
        run.close()
    assert code == 143 and time.monotonic() - started < 5, (code, time.monotonic() - started, output)
    assert "interrupted" in output and "Traceback" not in output, output


def test_sigterm_while_the_run_starts_its_cluster_ends_within_seconds(small, tmp_path):
    run = Run([*data_flags(small), "--engine", "ray", "--no-progress"], tmp_path / "out")
    try:
        run.wait_for(lambda: ray_process("gcs_server")(run), 120, "Ray's GCS starting")
        os.kill(run.process.pid, signal.SIGTERM)
        started = time.monotonic()
        code, output = run.finish(60)
    finally:
        run.close()
    assert code == 143 and time.monotonic() - started < 10, (code, time.monotonic() - started, output)
    assert "Traceback" not in output, output


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
        # The cluster ray.init started shares the driver's fate: raylet and GCS die with it at once, Ray's
        # runtime-env and dashboard agents once they notice (measured: about 60 s).
        run.close(120)
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
                                      env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_port(port, 60)
        nodes.append(subprocess.Popen([ray_cli, "start", "--address", f"127.0.0.1:{port}", "--temp-dir", str(worker_dir), *common],
                                      env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
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
        done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=60)
        if done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(1)
    pytest.fail(f"{count} Ray nodes did not join within {seconds} s")


def test_bench_extract_runs_the_engines_side_by_side(tmp_path):
    from ucfpipe.bench import extract as bench_extract

    results = bench_extract.run(clip_counts=(8,), frames=4, size=32, batch_size=16, workers=2, work_dir=str(tmp_path),
                                log=lambda *_: None, engines=("local", "ray"))
    ray_run = next(r for r in results["runs"] if r["mode"] == "extract-ray")
    assert ray_run["frames"] == 8 * 4 and 0 < ray_run["startup_seconds"] < ray_run["seconds"]
    assert results["max_engine_relative_error"] == 0  # the same cache, whichever engine wrote it
    assert results["decode_frames_per_second_per_core"] > 0
    assert re.search(r"extract-ray round 1: start-up \d+\.\d s", bench_extract.format_table(results))
