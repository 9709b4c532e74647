"""Reproducibility, the one place generators are seeded: `seed_everything` for a run (train, finetune,
bench train) and `seeded` for one seeded build inside a library call (`--weights none`), which leaves the
caller's Python and NumPy random streams where they were."""

from __future__ import annotations

import random
from contextlib import contextmanager

import keras
import numpy as np


def seed_everything(seed: int, deterministic_ops: bool = True) -> None:
    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend's generators
    if deterministic_ops and keras.backend.backend() == "tensorflow":  # TF-only corner: its kernels may otherwise reorder sums
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@contextmanager
def global_random_state_kept():
    """`keras.utils.set_random_seed` also reseeds Python's `random` and NumPy's global generator, and Keras
    draws a default seed from Python's `random` for every unseeded layer it builds or loads; a library call
    (a Predictor built in a notebook) must leave the caller's random streams where they were."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def seeded(seed: int, build):
    """`build()` with the backend's generator seeded: the one place a seeded random initialisation
    (`--weights none`) happens. Python's and NumPy's global streams are left where the caller had them; the
    backend's kernels are not switched to deterministic ones (that is a run's choice, `seed_everything`)."""
    with global_random_state_kept():
        seed_everything(seed, deterministic_ops=False)
        return build()
