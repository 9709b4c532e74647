"""The search space file: every train setting by its own name; each refusal is one line naming the setting,
before any trial (what Optuna would only refuse at the first trial, or silently run with)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucfpipe.config import TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.search import space as spaces

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = TrainConfig(features="f", splits="s", out="o")


@pytest.mark.parametrize("data, fragments", [
    ({}, ["names no setting"]),
    ({"unit": {"int": [8, 16]}}, ["unit", "not a train setting"]),
    ({"epochs": {"int": [1, 5]}}, ["epochs", "fixed for the whole search"]),
    ({"units": [8, 16]}, ["units", "must be a table"]),
    ({"units": {"int": [8, 16], "choices": [8]}}, ["units", "exactly one of choices, int, float"]),
    ({"units": {"int": [8, 16], "stp": 8}}, ["units", "unknown key 'stp'"]),
    ({"units": {"int": [16, 8]}}, ["units", "empty"]),
    ({"dropout": {"float": [0.5, 0.1]}}, ["dropout", "empty"]),
    ({"units": {"choices": []}}, ["units", "non-empty list"]),
    ({"units": {"int": [8.5, 16]}}, ["units", "two ints"]),
    ({"units": {"float": [8.0, 16.0]}}, ["units", "int setting"]),
    ({"cell": {"int": [1, 2]}}, ["cell", "str setting", "choices"]),
    ({"cell": {"choices": ["lstm", "rnn"]}}, ["cell", "'rnn'", "one of"]),
    ({"bidirectional": {"choices": [0, 1]}}, ["bidirectional", "not of type bool"]),
    ({"units": {"choices": ["8"]}}, ["units", "not of type int"]),
    ({"learning_rate": {"float": [0.0, 1e-2], "log": True}}, ["learning_rate", "LOW > 0"]),
    ({"learning_rate": {"float": [1e-4, 1e-2], "log": True, "step": 1e-4}}, ["learning_rate", "step", "log"]),
    ({"units": {"int": [8, 17], "step": 4}}, ["units", "whole number of steps"]),
    ({"units": {"int": [8, 16], "step": 0}}, ["units", "positive"]),
    ({"bidirectional": {"choices": [False, True], "when": {"cell": ["lstm"]}}}, ["bidirectional", "when names 'cell'"]),
    ({"cell": {"choices": ["lstm", "gru"]}, "bidirectional": {"choices": [True], "when": {"cell": ["rnn"]}}},
     ["bidirectional", "some of its choices"]),
])
def test_a_bad_space_is_one_line_naming_the_setting(data, fragments):
    with pytest.raises(UcfpipeError) as caught:
        spaces.check(data, "space.toml")
    assert all(f in str(caught.value) for f in fragments) and "\n" not in str(caught.value), str(caught.value)


def test_a_default_outside_its_range_is_refused_before_any_trial():
    space = spaces.check({"units": {"int": [8, 64], "step": 8}, "weight_decay": {"choices": [1e-5, 1e-4]}})
    with pytest.raises(UcfpipeError, match=r"units: train's value 512 .* outside \[8, 64\]"):
        spaces.defaults_in(space, DEFAULTS)
    space = spaces.check({"units": {"int": [501, 525], "step": 6}})  # 512 is in range but off the steps
    with pytest.raises(UcfpipeError, match="units"):
        spaces.defaults_in(space, DEFAULTS)


def test_the_default_space_holds_every_listed_setting_and_train_defaults():
    space = spaces.load(ROOT / "stages" / "tune.toml")
    assert list(space) == ["cell", "units", "heads", "layers", "bidirectional", "dropout", "learning_rate", "weight_decay",
                           "label_smoothing", "batch_size", "time_jitter", "step_drop", "train_views"]
    assert space["learning_rate"]["log"] is True and 0.0 in space["weight_decay"]["choices"]
    assert spaces.defaults_in(space, DEFAULTS)["units"] == 512
    assert "transformer" in space["cell"]["choices"] and space["heads"]["when"] == {"cell": ["transformer"]}
    assert all(units % heads == 0 for units in range(128, 1025, 128) for heads in space["heads"]["choices"])


def test_a_when_skips_a_setting_whose_condition_does_not_hold():
    import optuna

    space = spaces.check({"cell": {"choices": ["lstm", "gru"]},
                          "bidirectional": {"choices": [False, True], "when": {"cell": ["lstm"]}}})
    study = optuna.create_study()
    study.enqueue_trial({"cell": "gru"})
    assert spaces.suggest(study.ask(), space) == {"cell": "gru"}
    assert spaces.defaults_in(space, TrainConfig(features="f", splits="s", out="o", cell="gru")) == {"cell": "gru"}


def test_a_space_file_that_is_missing_or_not_toml_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(UcfpipeError, match="--space .*nope.toml not found$"):
        spaces.load(tmp_path / "nope.toml")
    monkeypatch.chdir(tmp_path)  # the default, stages/tune.toml, is relative: say where it was looked for
    with pytest.raises(UcfpipeError, match=f"stages/tune.toml not found \\(relative to {tmp_path}: run from the ucfpipe checkout"):
        spaces.load("stages/tune.toml")
    (tmp_path / "bad.toml").write_text("[units\n")
    with pytest.raises(UcfpipeError, match="not valid TOML"):
        spaces.load(tmp_path / "bad.toml")


def test_a_conditional_space_offers_the_transformer_without_bidirectional():
    import optuna

    space = spaces.check({"cell": {"choices": ["lstm", "transformer"]},
                          "bidirectional": {"choices": [False, True], "when": {"cell": ["lstm", "gru"]}},
                          "heads": {"choices": [2, 4], "when": {"cell": ["transformer"]}}})
    study = optuna.create_study()
    study.enqueue_trial({"cell": "transformer", "heads": 2})
    params = spaces.suggest(study.ask(), space)
    assert params == {"cell": "transformer", "heads": 2}
    TrainConfig(features="f", splits="s", out="o", units=64, **params).validate()
