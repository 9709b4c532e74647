"""The temporal Transformer cell: its shape, that it reads frame order, that it saves and loads with plain Keras,
and the settings it refuses. (It learning frame order: test_classifier.py; through every command: test_matrix.py.)"""

import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import assert_one_line_error, evaluated, invoke, reports
from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.rng import seed_everything
from ucfpipe.models.classifier import build_classifier, feature_statistics

TINY = {"cell": "transformer", "units": 8, "heads": 2, "layers": 2, "dropout": 0.0}


def transformer(x, num_classes: int = 5, **changes) -> keras.Model:
    seed_everything(0)
    return build_classifier(x.shape[1], x.shape[2:], num_classes, *feature_statistics([x]), **{**TINY, **changes})


def clips(n: int = 3, steps: int = 6, dims: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, steps, dims)).astype(np.float32)


def test_the_transformer_gives_class_probabilities_per_clip():
    model = transformer(clips(), num_classes=7)
    probabilities = model.predict(clips(), verbose=0)
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    names = {layer.name for layer in model.layers}
    assert {"standardise", "project", "position_embedding", "block_2_attention", "final_norm", "mean_over_time"} <= names
    assert model.get_layer("position_embedding").get_weights()[0].shape == (6, 8)  # one vector per step


def test_spatial_features_are_flattened_per_step_for_the_transformer():
    x = np.random.default_rng(0).normal(size=(2, 4, 2, 2, 3)).astype(np.float32)
    assert transformer(x).predict(x, verbose=0).shape == (2, 5)


def test_the_position_embedding_makes_the_transformer_read_frame_order():
    x = clips()
    model = transformer(x)
    reversed_in_time = x[:, ::-1]
    assert not np.allclose(model.predict(x, verbose=0), model.predict(reversed_in_time, verbose=0), atol=1e-5)
    # Without it, attention and the mean over time see a set of steps: reversing them changes nothing.
    embedding = model.get_layer("position_embedding")
    embedding.set_weights([np.zeros_like(embedding.get_weights()[0])])
    np.testing.assert_allclose(model.predict(x, verbose=0), model.predict(reversed_in_time, verbose=0), atol=1e-5)


def test_the_transformer_saves_and_loads_in_safe_mode_unchanged(tmp_path):
    x = clips()
    model = transformer(x)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_the_saved_transformer_loads_where_ucfpipe_cannot_be_imported(tmp_path):
    """The export's promise (templates/classify.py): plain Keras 3 loads the model, no layer class of ours needed."""
    x = clips()
    transformer(x).save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", x)
    script = ("import sys; sys.modules['ucfpipe'] = None\n"  # any import of ucfpipe now fails
              "import keras, numpy as np\n"
              f"model = keras.saving.load_model({str(tmp_path / 'm.keras')!r})\n"
              f"np.save({str(tmp_path / 'p.npy')!r}, model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), transformer(x).predict(x, verbose=0), atol=1e-6)


def test_the_transformer_has_no_bidirectional_variant():
    with pytest.raises(ValueError, match="bidirectional"):
        transformer(clips(), bidirectional=True)


def config(**changes) -> TrainConfig:
    return TrainConfig(features="f", splits="s", out="o", **{**TINY, **changes})


def test_units_must_be_a_multiple_of_heads_naming_both_flags():
    with pytest.raises(UcfpipeError) as refused:
        config(units=10, heads=4).validate()
    message = str(refused.value)
    assert "--units 10" in message and "--heads 4" in message and "\n" not in message
    config(units=12, heads=4).validate()
    config(cell="lstm", units=10, heads=4).validate()  # heads is the transformer's alone


def test_the_transformer_refuses_bidirectional_naming_the_flag():
    with pytest.raises(UcfpipeError, match="--bidirectional does not apply to the transformer cell"):
        config(bidirectional=True).validate()
    config(cell="gru", bidirectional=True).validate()


def test_heads_must_be_positive():
    with pytest.raises(UcfpipeError, match="--heads must be a positive integer, got 0"):
        config(heads=0).validate()


@pytest.mark.parametrize("flags, fragments", [
    (["--cell", "transformer", "--units", 10, "--heads", 4], ("--units 10 must be a multiple of --heads 4",)),
    (["--cell", "transformer", "--bidirectional"], ("--bidirectional does not apply to the transformer cell",)),
    (["--cells", "lstm,transformer", "--bidirectional"], ("--bidirectional does not apply to the transformer cell",)),
])
def test_train_refuses_what_the_transformer_cannot_do_in_one_line(tmp_path, flags, fragments):
    out = tmp_path / "run"
    result = invoke("train", "--features", tmp_path / "none", "--splits", tmp_path / "none", "--out", out, *flags)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_the_report_names_the_transformer_and_shows_its_settings(tmp_path):
    dirs = [evaluated(tmp_path / f"split{s}", s, 0.8, cell="transformer", heads=2, layers=2) for s in (1, 2)]
    said = reports(dirs, tmp_path)
    assert "| Transformer top-1 |" in said["markdown"] and "LSTM" not in said["markdown"]
    assert "heads" in said["html"] and "transformer" in said["html"]
    margin = invoke("report", "--require-margin", 0.1, *dirs)  # no order-blind figure: refused, naming the flag
    assert "--require-margin needs the order-blind reference" in margin.output
