"""ucfpipe: videos to a trained, evaluated CNN-LSTM classifier, through a cached feature stage.

The Python API a user needs most is the feature cache: `from ucfpipe import FeatureStore`. It loads on first
use (h5py is not imported by `import ucfpipe`, so `ucfpipe --help` stays instant)."""

__version__ = "0.1.0"
__all__ = ["FeatureStore", "__version__"]


def __getattr__(name):
    if name == "FeatureStore":
        from ucfpipe.cache.store import FeatureStore

        return FeatureStore
    raise AttributeError(f"module 'ucfpipe' has no attribute {name!r}")
