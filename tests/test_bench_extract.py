"""The extraction benchmark runs at a tiny size so it cannot rot; it asserts correctness, never speed."""

import pytest

from ucfpipe.bench import extract as bench_extract

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`


def test_benchmark_paths_compute_the_same_features(tmp_path):
    results = bench_extract.run(clip_counts=(8,), frames=4, size=32, batch_size=16, workers=2, work_dir=str(tmp_path),
                                log=lambda *_: None)
    assert sorted(r["mode"] for r in results["runs"]) == sorted(bench_extract.MODES)
    assert all(r["frames"] == 8 * 4 and r["seconds"] > 0 and r["peak_rss_mib"] > 0 for r in results["runs"])
    decode = next(r for r in results["runs"] if r["mode"] == "decode")
    model = next(r for r in results["runs"] if r["mode"] == "model")
    # Each mode's own peak memory, not the parent's: decoding alone loads no Keras, so it needs far less.
    assert decode["peak_rss_mib"] < 0.7 * model["peak_rss_mib"]
    assert decode["decoded_frames"] >= 8 * 60  # every frame of every clip was decoded (60-200 frames each)
    # ucfpipe's batched, in-model-preprocessed path and the naive per-clip NumPy path agree to float16 rounding.
    assert results["max_feature_relative_error"] < 2e-3
    table = bench_extract.format_table(results)
    assert "extract / model-only throughput" in table and "naive" in table
