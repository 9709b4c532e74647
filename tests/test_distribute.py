"""Data-parallel training: the same model as on one device, on JAX with simulated CPU devices; clear refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import invoke
from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.models import distribute
from ucfpipe.stage_two.batches import ClipBatches, InMemory

pytestmark = pytest.mark.slow  # subprocesses, exports or every backbone: `make test`, not `make test-fast`

# Trains the tiny cache twice on JAX, on one device and data parallel over 4 simulated CPU devices, then
# evaluates both in the same process (the distribution must not leak out of training). 54 training clips in
# batches of 8 end in a batch of 6 and 18 validation clips in one of 2: both need padding on 4 devices.
SCRIPT = """
import json, sys
import keras, numpy as np
from ucfpipe.stage_two import evaluate, run_setup, runs, train
from ucfpipe.config import TrainConfig
from ucfpipe import FeatureStore

cache, splits, out = sys.argv[1:4]
common = dict(features=cache, splits=splits, split=1, units=16, epochs=3, batch_size=8, val_groups=1,
              learning_rate=3e-3, dropout=0.2, label_smoothing=0.0, seed=1)
report = {"devices": len(keras.distribution.list_devices())}
for mode in ("none", "data"):
    config = TrainConfig(out=f"{out}/{mode}", distribute=mode, **common)
    summary = train.run(config, log=lambda *_: None, verbose=0)
    assert keras.distribution.distribution() is None, "the distribution leaked out of training"
    evaluate.run(f"{out}/{mode}", log=lambda *_: None)
    run = runs.Run(f"{out}/{mode}")
    ids = json.load(open(f"{out}/{mode}/clips.json"))["test"]
    features = FeatureStore(cache).features(ids).astype("float32")
    report[mode] = {"history": summary["history"], "placement": run.record["placement"],
                    "probabilities": runs.load_model(f"{out}/{mode}/model.keras").predict(features, verbose=0).tolist(),
                    "metrics": json.load(open(f"{out}/{mode}/metrics.json"))["top1"]}
# Interrupted after epoch 2 on 4 devices, resumed on one (--resume may change the placement): the same model.
original = train.RunKeeper.on_epoch_end
def interrupt_after_two(self, epoch, logs=None):
    original(self, epoch, logs)
    if epoch == 1:
        raise KeyboardInterrupt
train.RunKeeper.on_epoch_end = interrupt_after_two
try:
    train.run(TrainConfig(out=f"{out}/resumed", distribute="data", **common), log=lambda *_: None, verbose=0)
except train.TrainingInterrupted:
    pass
train.RunKeeper.on_epoch_end = original
train.run(run_setup.resume_config(f"{out}/resumed", {"distribute": "none"}), resume=True, log=lambda *_: None, verbose=0)
report["resumed"] = runs.load_model(f"{out}/resumed/model.keras").predict(features, verbose=0).tolist()

from ucfpipe.bench import train as bench_train
timing = bench_train.run(TrainConfig(features="-", splits="-", out="-", distribute="data", batch_size=8, units=8),
                         clips=30, frames=4, dim=8, num_classes=3, epochs=2, log=lambda *_: None)
report["bench_steps"] = timing["steps_per_epoch"]
print("REPORT" + json.dumps(report))
"""


def test_data_parallel_on_four_simulated_devices_trains_the_one_device_model(synth_cache, synth_dataset, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(synth_cache), str(synth_dataset["splits"]), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("REPORT"))[6:])
    single, parallel = report["none"], report["data"]
    assert report["devices"] == 4
    assert parallel["placement"] == {"mode": "data", "devices": ["cpu:0", "cpu:1", "cpu:2", "cpu:3"], "backend": "jax"}
    assert single["placement"]["mode"] == "none"
    assert report["bench_steps"] == 4  # bench-train data parallel too: 30 clips in batches of 8, the last padded
    # Same gradients every step (padding rows weigh nothing, the short batch's real rows are weighted up):
    # the same weights, so the same validation figures and test probabilities, to float rounding.
    for a, b in zip(single["history"], parallel["history"]):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-6)
    np.testing.assert_allclose(parallel["probabilities"], single["probabilities"], atol=1e-4)
    assert parallel["metrics"] == pytest.approx(single["metrics"])
    np.testing.assert_allclose(report["resumed"], parallel["probabilities"], atol=1e-4)
    # The check has teeth: training changed the model over the epochs.
    assert single["history"][0]["val_loss"] != pytest.approx(single["history"][-1]["val_loss"], rel=1e-3)


def _one_pass(batches):
    return [batches[i] for i in range(len(batches))]  # asking for batch 0 again would start a new pass


def test_padding_keeps_each_step_and_each_pass_exact():
    features = np.arange(18 * 2 * 3, dtype=np.float16).reshape(18, 2, 3)
    labels = np.arange(18) % 3
    step = _one_pass(ClipBatches(InMemory(features), labels, 3, 8, shuffle_seed=0, multiple_of=4, pad_weighting="step"))
    assert [len(w) for _, _, w in step] == [8, 8, 4]  # the short batch of 2 is filled up to 4
    for _, _, weights in step:
        # Keras divides a batch's weighted loss sum by its rows: weights that sum to the rows give the real mean.
        assert weights.sum() == pytest.approx(len(weights))
    x, _, weights = step[2]
    assert list(weights) == [2.0, 2.0, 0.0, 0.0]
    np.testing.assert_array_equal(x[2:], np.repeat(x[:1], 2, axis=0))  # copies of a real clip
    seen = np.concatenate([x[w > 0].reshape(len(x[w > 0]), -1)[:, 0] for x, _, w in step])
    assert sorted(seen) == sorted(features[:, 0, 0])  # every real clip exactly once

    whole = _one_pass(ClipBatches(InMemory(features), labels, 3, 8, multiple_of=4, pad_weighting="pass"))
    weights = np.concatenate([w for _, _, w in whole])
    assert weights.sum() == pytest.approx(len(weights))  # the pass's mean is over its 18 real clips
    assert np.count_nonzero(weights) == 18 and np.allclose(weights[weights > 0], 20 / 18)

    plain = ClipBatches(InMemory(features), labels, 3, 8)
    assert len(plain[2]) == 2 and len(plain[2][0]) == 2  # one device: no weights, no padding


def test_data_parallel_needs_jax_and_an_even_split(synth_cache, synth_dataset, tmp_path, monkeypatch):
    import keras

    assert keras.backend.backend() == "tensorflow"  # the suite's backend
    with pytest.raises(UcfpipeError, match="KERAS_BACKEND=jax"):
        distribute.placement("data", 32)
    assert distribute.placement("none", 7).replicas == 1

    result = invoke("train", "--features", str(synth_cache), "--splits", str(synth_dataset["splits"]),
                    "--out", str(tmp_path / "run"), "--distribute", "data")
    assert result.exit_code == 2 and "needs the JAX backend" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    monkeypatch.setattr(keras.distribution, "list_devices", lambda: ["gpu:0", "gpu:1", "gpu:2"])
    with pytest.raises(UcfpipeError, match=r"^--batch-size 32 does not split evenly .* multiple of 3, e.g. 30"):
        distribute.placement("data", 32)

    with pytest.raises(UcfpipeError, match="distribute must be one of none, data"):
        TrainConfig(features="f", splits="s", out="o", distribute="model").validate()
