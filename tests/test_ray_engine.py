"""`extract --engine ray`: the same cache as the local engine on a local Ray cluster, decode and model as two Ray
Data stages, the one-line refusals of a bad --address, and the benchmark of both engines. The faults (a busy
worker or actor killed, the driver killed, a node lost, Ctrl-C and SIGTERM) are in test_ray_faults.py: two
files, so that `make test`'s two processes take one each."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_one_line_error, invoke
from ray_helpers import Run, assert_every_clip_once, data_flags, ray_env, ray_process, started_here
from ray_helpers import ray_token  # noqa: F401  (autouse: every test runs with this session's Ray token)

pytestmark = pytest.mark.slow
EQUAL = {"frames": 4, "size": 32, "weights": "none", "seed": 0}




# -- data -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    from ucfpipe.datasets.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("ray-small"), num_classes=2, num_groups=3, clips_per_group=2,
                            frame_size=(64, 48), seed=0)


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
    assert not started_here(), "the Ray cluster the run started outlived it"


def test_a_ray_run_prints_none_of_rays_own_warnings(small, tmp_path):
    from ucfpipe.stage_one import ray_engine

    # PYTHONWARNINGS=default: the DeprecationWarnings a command line hides by default would print too
    run = Run([*data_flags(small), "--frames", "4", "--size", "32", "--weights", "none", "--no-progress", "--engine", "ray"],
              tmp_path / "out", env=ray_env(PYTHONWARNINGS="default"))
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
    assert not started_here()


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


def test_bench_extract_runs_the_engines_side_by_side(tmp_path):
    from ucfpipe.bench import extract as bench_extract

    # Decoding beside the engines, not every mode: test_bench_extract.py runs those, each in a process of its own.
    results = bench_extract.run(clip_counts=(8,), frames=4, size=32, batch_size=16, workers=2, work_dir=str(tmp_path),
                                log=lambda *_: None, engines=("local", "ray"), repeats=1, modes=("decode",))
    assert [r["mode"] for r in results["runs"]] == ["extract", "extract-ray", "decode"]
    ray_run = next(r for r in results["runs"] if r["mode"] == "extract-ray")
    assert ray_run["frames"] == 8 * 4 and 0 < ray_run["startup_seconds"] < ray_run["seconds"]
    assert results["max_engine_relative_error"] == 0  # the same cache, whichever engine wrote it
    assert results["decode_frames_per_second_per_core"] > 0
    assert re.search(r"extract-ray round 1: start-up \d+\.\d s", bench_extract.format_table(results))
