"""The sequence classifier: it uses frame order, standardises with training statistics, saves safely."""

import keras
import numpy as np
import pytest

from ucfpipe.core.rng import seed_everything
from ucfpipe.models.classifier import VARIANCE_FLOOR, build_classifier, compile_classifier, feature_statistics


def trend_sequences(num_clips: int, seed: int, steps: int = 10, dims: int = 8):
    """4 classes = (which pair of dims trends) x (up or down), on a random per-clip offset plus noise.
    A trend's mean over time is zero, so the time-averaged features of all classes share one distribution:
    only the order of the steps tells the classes apart."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=num_clips)
    ramp = np.linspace(-1.0, 1.0, steps)
    x = rng.normal(0.0, 1.0, size=(num_clips, 1, dims)) + rng.normal(0.0, 0.3, size=(num_clips, steps, dims))
    for i, label in enumerate(labels):
        pair, direction = divmod(int(label), 2)
        amplitude = rng.uniform(0.5, 1.5)
        x[i, :, 2 * pair : 2 * pair + 2] += (amplitude * (1 if direction == 0 else -1) * ramp)[:, None]
    return (10.0 + x).astype(np.float32), labels  # offset: standardisation has to do its job


@pytest.mark.parametrize("cell", [{"cell": "lstm"}, {"cell": "transformer", "heads": 2}], ids=lambda c: c["cell"])
def test_the_cell_learns_frame_order_that_an_order_blind_classifier_cannot_see(cell):
    from sklearn.linear_model import LogisticRegression

    x_train, y_train = trend_sequences(400, seed=1)
    x_test, y_test = trend_sequences(200, seed=2)
    seed_everything(0)
    model = build_classifier(10, (8,), 4, *feature_statistics([x_train]), units=16, dropout=0.1, **cell)
    compile_classifier(model, learning_rate=1e-2, label_smoothing=0.0)
    model.fit(x_train, keras.utils.to_categorical(y_train, 4), epochs=15, batch_size=32, verbose=0)
    lstm_accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(axis=1) == y_test))

    order_blind = LogisticRegression(max_iter=2000).fit(x_train.mean(axis=1), y_train)
    blind_accuracy = order_blind.score(x_test.mean(axis=1), y_test)
    assert lstm_accuracy >= 0.9, lstm_accuracy
    assert blind_accuracy <= 0.4, blind_accuracy  # chance is 0.25


def test_feature_statistics_are_per_feature_over_all_steps_of_all_clips():
    rng = np.random.default_rng(0)
    x = (1000.0 + rng.normal(size=(30, 5, 3)) * [1.0, 2.0, 3.0]).astype(np.float16)
    mean, variance = feature_statistics([x[:7], x[7:]])
    flat = x.astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(variance, flat.var(axis=0), rtol=1e-4)


def test_a_feature_that_never_varies_gets_a_floored_variance():
    x = np.random.default_rng(0).normal(size=(10, 4, 3)).astype(np.float32)
    x[..., 1] = 0.0  # a dead ReLU channel
    _, variance = feature_statistics([x])
    assert variance[1] == pytest.approx(VARIANCE_FLOOR * variance.mean(), rel=0.05)


def test_standardisation_is_inside_the_model_and_survives_safe_loading(tmp_path):
    x = np.random.default_rng(0).normal(5.0, 2.0, size=(6, 4, 3)).astype(np.float32)
    model = build_classifier(4, (3,), 2, *feature_statistics([x]), units=4)
    compile_classifier(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    standardised = keras.Model(loaded.inputs, loaded.get_layer("standardise").output).predict(x, verbose=0)
    flat = standardised.reshape(-1, 3)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-4)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("options", [
    {"cell": "gru", "layers": 2},
    {"cell": "lstm", "bidirectional": True},
    {"cell": "transformer", "layers": 2, "heads": 2},
])
def test_cells_layers_and_directions_build_and_predict(options):
    x = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float32)
    model = build_classifier(5, (6,), 7, *feature_statistics([x]), units=4, **options)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (3, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_spatial_features_are_flattened_per_step():
    x = np.random.default_rng(0).normal(size=(2, 4, 2, 2, 3)).astype(np.float32)  # (N, T, h, w, C): pooling "none"
    mean, variance = feature_statistics([x])
    assert mean.shape == (12,)
    model = build_classifier(4, (2, 2, 3), 5, mean, variance, units=4)
    assert model.predict(x, verbose=0).shape == (2, 5)
