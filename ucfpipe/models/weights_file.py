"""What a Keras weights file holds, read with h5py alone: its layers that have weights, in order, and their
arrays' shapes. No Keras here; `extractor.py` compares this with a built backbone before any work.

Two layouts exist. Keras 2 (and Keras 3's `save_weights` to a plain `.h5`) write the legacy one: one group per
layer, named by the layer, in model order, listed by the `layer_names` attribute (at the top, or under
`model_weights` for a whole saved model); each group's `weight_names` attribute orders its arrays. Keras 3's
`.weights.h5` writes `layers/<key>/vars/<i>`, with keys made from the layer's class name and a counter
(`conv2d`, `conv2d_1`, ...), never from its name, which Keras numbers per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError

LEGACY, KERAS3 = "legacy Keras HDF5", "Keras 3 .weights.h5"


@dataclass(frozen=True)
class WeightsFile:
    path: str
    layout: str  # LEGACY or KERAS3
    # (key, shapes of its arrays) of every layer with weights, in file order: model order for LEGACY, the keys'
    # order for KERAS3 (matched by key, not by position)
    layers: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]

    @property
    def parameters(self) -> int:
        total = 0
        for _, shapes in self.layers:
            for shape in shapes:
                count = 1
                for side in shape:
                    count *= side
                total += count
        return total

    def summary(self) -> str:
        """Its layout and size, e.g. "legacy Keras HDF5, 28 layers with weights, 218,544 parameters"."""
        return f"{self.layout}, {len(self.layers)} layers with weights, {self.parameters:,} parameters"

    def arrays(self, keys) -> dict:
        """{key: the arrays of that layer, in the order the layer holds them} for the layers `keys`."""
        import h5py

        found = {}
        with h5py.File(self.path, "r") as handle:
            for key in keys:
                if self.layout == KERAS3:
                    variables = handle["layers"][key]["vars"]
                    found[key] = [variables[str(i)][()] for i in range(len(variables))]
                else:
                    group = _legacy_root(handle)[key]
                    found[key] = [group[_text(name)][()] for name in group.attrs["weight_names"]]
        return found


def read(path: str | Path) -> WeightsFile:
    """The layers with weights of the Keras weights file at `path`; UcfpipeError (one line) if it is none."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise UcfpipeError(f"{path} is not a Keras weights file (not HDF5: {' '.join(str(err).split())[:80]}); "
                           "pass a .h5 or .weights.h5 file") from None
    with handle:
        if "layer_names" in _legacy_root(handle).attrs:
            root = _legacy_root(handle)
            layers = []
            for name in map(_text, root.attrs["layer_names"]):
                group = root[name]
                names = [_text(n) for n in group.attrs.get("weight_names", [])]
                if names:
                    layers.append((name, tuple(tuple(group[n].shape) for n in names)))
            return WeightsFile(str(path), LEGACY, tuple(layers))
        if isinstance(handle.get("layers"), h5py.Group):
            return WeightsFile(str(path), KERAS3, tuple(_keras3_layers(handle["layers"], "")))
    raise UcfpipeError(f"{path} is an HDF5 file but not Keras weights (neither layer_names nor layers/ in it); "
                       "pass a .h5 or .weights.h5 file saved by Keras")


def _keras3_layers(group, prefix: str) -> list:
    """(key, shapes) of each layer under `group`: `<key>/vars/<i>`, a nested model's layers under `<key>/layers/`."""
    import h5py

    layers = []
    for key, layer in group.items():
        variables = layer.get("vars")
        if isinstance(variables, h5py.Group) and len(variables):
            layers.append((prefix + key, tuple(tuple(variables[str(i)].shape) for i in range(len(variables)))))
        if isinstance(layer.get("layers"), h5py.Group):
            layers += _keras3_layers(layer["layers"], f"{prefix}{key}/layers/")
    return layers


def _legacy_root(handle):
    return handle["model_weights"] if "model_weights" in handle else handle


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
