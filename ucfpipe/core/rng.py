"""Reproducibility: one call seeds every generator a run draws from (train, finetune, bench-train)."""

from __future__ import annotations

import keras


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's generators
    if keras.backend.backend() == "tensorflow":  # TF-only corner: its kernels may otherwise reorder sums
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
