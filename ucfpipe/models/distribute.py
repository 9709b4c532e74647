"""Data-parallel training over every accelerator of the machine, through Keras' own distribution API.

`keras.distribution.DataParallel` replicates the model's variables on each device and splits every batch
evenly over them; gradients are summed across devices inside the compiled step, so a step over a global
batch of B clips computes what one device would compute on the same B clips. Keras implements this API on
the JAX backend only (its TensorFlow version is marked "do not use"), so `distribute = "data"` asks for
KERAS_BACKEND=jax; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices.
Dropout masks match one device's only where JAX draws random bits independently of sharding
(`jax_threefry_partitionable`, the default since JAX 0.5).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import keras

from ucfpipe.core.errors import UcfpipeError


@dataclass
class Placement:
    """Where training runs: `scope()` wraps model building and fitting; batches must split into `replicas`."""

    mode: str = "none"
    devices: list[str] = field(default_factory=list)
    distribution: object = field(default=None, repr=False)  # a keras.distribution.Distribution, or None

    @property
    def replicas(self) -> int:
        return len(self.devices) if self.mode == "data" else 1

    def scope(self):
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()

    def describe(self) -> dict:
        return {"mode": self.mode, "devices": self.devices, "backend": keras.backend.backend()}


def placement(mode: str, batch_size: int) -> Placement:
    """The placement for `distribute = mode`; checks the backend and that `batch_size` splits evenly."""
    if mode == "none":
        return Placement()
    backend = keras.backend.backend()
    if backend != "jax":
        raise UcfpipeError(
            f"distribute = \"data\" needs the JAX backend (Keras' distribution API is implemented for JAX only), "
            f"but Keras runs on {backend}; install jax (pip install 'jax[cuda12]' on GPUs) and run with "
            "KERAS_BACKEND=jax, or set distribute = \"none\""
        )
    import jax  # a JAX-only corner: the backend is JAX here

    if jax.process_count() > 1:
        raise UcfpipeError(
            f"--distribute data runs on the devices of one machine; this JAX job spans {jax.process_count()} "
            "processes (multi-host training is not supported): run one process per machine"
        )
    devices = keras.distribution.list_devices()
    if batch_size % len(devices):
        raise UcfpipeError(
            f"--batch-size {batch_size} does not split evenly over the {len(devices)} devices of data parallelism "
            f"({', '.join(devices)}); use a multiple of {len(devices)}, e.g. {len(devices) * max(1, batch_size // len(devices))}"
        )
    return Placement("data", devices, keras.distribution.DataParallel(devices=devices))
