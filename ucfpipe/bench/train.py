"""`ucfpipe bench-train`: how long a training epoch takes. Random features of UCF-101's shape (9,537
training clips of split 1, T=40, 512 features, 101 classes) go through the training configuration's model
and the same in-memory input pipeline as `ucfpipe train`.

The first epoch includes tracing/compilation and is reported apart from the steady ones."""

from __future__ import annotations

import time

import keras
import numpy as np

from ucfpipe.config import TrainConfig
from ucfpipe.core.rng import seed_everything
from ucfpipe.models.classifier import build_classifier, compile_classifier
from ucfpipe.models.distribute import placement
from ucfpipe.stage_two.batches import ClipBatches, InMemory


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def run(config: TrainConfig, clips: int = 9537, frames: int = 40, dim: int = 512, num_classes: int = 101,
        epochs: int = 2, log=print) -> dict:
    if min(clips, frames, dim, num_classes, epochs) < 1:
        raise ValueError("clips, frames, dim, classes and epochs must all be positive")
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    features = rng.standard_normal((clips, frames, dim), dtype=np.float32).astype(np.float16)  # as the cache stores
    labels = rng.integers(0, num_classes, size=clips)
    where_to = placement(config.distribute, config.batch_size)
    with where_to.scope():
        model = build_classifier(frames, (dim,), num_classes, np.zeros(dim, np.float32), np.ones(dim, np.float32),
                                 cell=config.cell, units=config.units, layers=config.layers,
                                 bidirectional=config.bidirectional, dropout=config.dropout, heads=config.heads)
        compile_classifier(model, config.learning_rate, config.weight_decay, config.clipnorm, config.label_smoothing)
    batches = ClipBatches(InMemory(features), labels, num_classes, config.batch_size, shuffle_seed=config.seed,
                          multiple_of=where_to.replicas)
    devices = f"data parallel over {where_to.replicas} devices" if where_to.mode == "data" else "one device"
    log(f"{clips} clips x {frames} steps x {dim} features, {num_classes} classes; {config.cell} {config.layers}x{config.units}"
        f"{' bidirectional' if config.bidirectional else ''}, batch {config.batch_size}: {model.count_params():,} parameters; "
        f"Keras {keras.__version__} on {keras.backend.backend()}, {devices}")
    timer = _EpochTimer()
    with where_to.scope():
        model.fit(batches, epochs=epochs, callbacks=[timer], verbose=0, shuffle=False)
    steps = len(batches)
    log(f"epoch 1 (includes compilation): {timer.seconds[0]:.1f} s")
    result = {"first_epoch_s": timer.seconds[0], "epoch_s": None, "steps_per_epoch": steps, "parameters": model.count_params()}
    if len(timer.seconds) > 1:
        per_epoch = float(np.mean(timer.seconds[1:]))
        result.update(epoch_s=per_epoch, clips_per_s=clips / per_epoch)
        log(f"epochs 2-{epochs}: {per_epoch:.1f} s per epoch ({1000 * per_epoch / steps:.0f} ms per step of "
            f"{config.batch_size} clips, {clips / per_epoch:.0f} clips/s)")
    else:
        log("run at least 2 epochs to see the steady epoch time without compilation")
    return result
