"""The extraction benchmark runs at a tiny size so it cannot rot; it asserts correctness, never speed."""

import os

import pytest

from ucfpipe.bench import extract as bench_extract


@pytest.mark.slow  # subprocesses: `make test`, not `make test-fast`
def test_benchmark_paths_compute_the_same_features(tmp_path, monkeypatch):
    # The bench's own clips (UCF-101's size and layout) at their shortest, 3 s: every mode still decodes whole
    # clips, and generating, decoding and the naive peer take about half the time of 3-10 s clips.
    from ucfpipe.datasets import synth

    generate = synth.generate_dataset
    monkeypatch.setattr(synth, "generate_dataset", lambda root, **settings: generate(
        root, **{**settings, "max_frames": settings["min_frames"]}))
    results = bench_extract.run(clip_counts=(8,), frames=4, size=32, batch_size=16, workers=2, work_dir=str(tmp_path),
                                log=lambda *_: None, repeats=1)
    assert sorted(r["mode"] for r in results["runs"]) == sorted(bench_extract.MODES)
    assert all(r["frames"] == 8 * 4 and r["seconds"] > 0 and r["peak_rss_mib"] > 0 for r in results["runs"])
    decode = next(r for r in results["runs"] if r["mode"] == "decode")
    model = next(r for r in results["runs"] if r["mode"] == "model")
    # Each mode's own peak memory, not the parent's: decoding alone loads no Keras, so it needs far less.
    assert decode["peak_rss_mib"] < 0.7 * model["peak_rss_mib"]
    assert decode["decoded_frames"] == 8 * 75  # every frame of every clip was decoded (3 s at 25 frames/s)
    # ucfpipe's batched, in-model-preprocessed path and the naive per-clip NumPy path agree to float16 rounding.
    assert results["max_feature_relative_error"] < 2e-3
    assert results["machine"]["cores"] and "keras" in results["machine"]["versions"]
    table = bench_extract.format_table(results)
    assert "extract / model-only" in table and "naive" in table and "host" in table and "ceiling" in table


def rounds(**fps_by_mode):
    """Stand-in rounds of the largest count: frames/s per mode, one value a round."""
    runs = [{"mode": mode, "clips": 8, "round": i + 1, "frames_per_second": fps, "peak_rss_mib": 100.0}
            for mode, values in fps_by_mode.items() for i, fps in enumerate(values)]
    return {"settings": {"clip_counts": [8], "engines": ["local"], "workers": 2}, "runs": runs}


def test_modes_are_summarised_by_min_median_max_and_ratios_of_medians():
    results = bench_extract.summarise(rounds(model=[10, 30, 20], extract=[5, 1, 9], host=[60, 80, 70], naive=[2, 2, 2],
                                             decode=[40, 20, 30]))
    extract = next(row for row in results["summary"] if row["mode"] == "extract")
    assert (extract["min"], extract["median"], extract["max"], extract["rounds"]) == (1, 5, 9, 3)
    assert results["extract_vs_model"] == pytest.approx(5 / 20) and results["extract_vs_naive"] == pytest.approx(5 / 2)
    # On a CPU the model and decoding share the cores: the ceiling is the harmonic combination, below either.
    assert results["ceiling"]["frames_per_second"] == pytest.approx(1 / (1 / 20 + 1 / 30))
    assert results["host_frames_per_second_per_core"] == pytest.approx(70 / min(2, os.cpu_count()))


def test_with_an_accelerator_the_ceiling_is_the_lower_of_model_and_decoding():
    results = rounds(model=[100], extract=[25], host=[60], naive=[2], decode=[30])
    results["runs"][0]["accelerator"] = "H100"
    assert bench_extract.summarise(results)["ceiling"]["frames_per_second"] == 30


def test_modes_left_out_leave_out_the_figures_that_need_them():
    results = bench_extract.summarise(rounds(extract=[5, 7, 6], decode=[40, 20, 30]))
    assert results["decode_frames_per_second_per_core"] == pytest.approx(30 / min(2, os.cpu_count()))
    assert not {"ceiling", "extract_vs_model", "extract_vs_naive", "host_frames_per_second_per_core"} & set(results)
    results.update(machine={"cpu": "a CPU", "cores": 2}, settings={**results["settings"], "frames": 4, "size": 32,
                                                                      "batch_size": 16, "repeats": 3})
    table = bench_extract.format_table(results)
    assert "decoding alone: " in table and "ceiling" not in table and "naive" not in table and "host" not in table


def test_an_unknown_mode_is_one_line_before_any_measurement(tmp_path):
    from helpers import invoke

    result = invoke("bench", "extract", "--modes", "model,fast", "--json", tmp_path / "out.json", exit_code=2)
    assert "--modes must be a comma-separated subset of model, extract, host, naive, decode" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out.json").exists()
