"""What a run records next to its outputs so any figure can be reproduced: library versions and the machine."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def versions() -> dict:
    import keras  # imported here: `ucfpipe splits` and friends should not pay for Keras

    found = {"python": sys.version.split()[0], "platform": platform.platform(), "keras_backend": keras.backend.backend()}
    for package in ("ucfpipe", "keras", "tensorflow", "tensorflow-cpu", "jax", "numpy", "h5py", "opencv-python-headless",
                    "opencv-python", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
