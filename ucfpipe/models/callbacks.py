"""The Keras callback both stages' training share: safe points between batches.

Below stage one and stage two (which never import each other) so fine-tuning and train use one class. Keras is
imported on first use (module `__getattr__`), so importing this module costs nothing until a class is asked for.
"""

from __future__ import annotations

import functools

from ucfpipe.core import interrupts


@functools.cache
def _safe_points():
    import keras

    class SafePoints(keras.callbacks.Callback):
        """A Ctrl-C whose KeyboardInterrupt a gc callback swallowed still stops training at the next batch, or
        before the next epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            interrupts.check()

        def on_train_batch_end(self, batch, logs=None):
            interrupts.check()

        def on_test_batch_end(self, batch, logs=None):
            interrupts.check()

    return SafePoints


def __getattr__(name: str):
    if name == "SafePoints":
        return _safe_points()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
