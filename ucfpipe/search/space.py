"""The search space: a TOML file of `train` settings, each a choice, an int range or a float range.

    [units]                      [learning_rate]            [cell]
    int = [64, 512]              float = [1e-4, 3e-3]       choices = ["lstm", "gru"]
    step = 64                    log = true
    [bidirectional]
    choices = [false, true]
    when = { cell = ["lstm", "gru"] }     # only sampled when these settings have these values (conditional)

Everything Optuna would refuse at the first trial is refused here, in one line naming the setting, before any
trial; so is a default of `train` (trial 0) outside its range."""

from __future__ import annotations

import hashlib
import json
import math
import typing
from pathlib import Path

from ucfpipe.config import CHOICES, TrainConfig, read_toml
from ucfpipe.core.errors import UcfpipeError

# What a trial may not change: where the data is, what is predicted, the fixed budget and how the run is kept.
FIXED = ("features", "splits", "split", "out", "epochs", "val_groups", "monitor", "patience", "memory_limit_gb",
         "allow_missing", "seed", "distribute")
KINDS = ("choices", "int", "float")
KEYS = {"choices": {"choices", "when"}, "int": {"int", "step", "log", "when"}, "float": {"float", "step", "log", "when"}}


def searchable() -> dict[str, type]:
    """train's settings a space may name, with their types."""
    hints = typing.get_type_hints(TrainConfig)
    return {name: kind for name, kind in hints.items() if name not in FIXED and not name.startswith("_")}


def load(path: str | Path) -> dict:
    """The space in `path`, checked (names, kinds, types, ranges); as a dict name -> spec."""
    path = Path(path)
    data = read_toml(path, "--space")
    return check(data, str(path))


def check(data: dict, source: str = "the space") -> dict:
    if not data:
        raise UcfpipeError(f"{source} names no setting; give at least one [setting] table")
    known = searchable()
    for name, spec in data.items():
        where = f"{source}: {name}"
        if name not in known:
            fixed = " (fixed for the whole search: pass it as a flag or in --config)" if name in FIXED else ""
            raise UcfpipeError(f"{where} is not a train setting a search can vary{fixed}; known: {', '.join(sorted(known))}")
        if not isinstance(spec, dict):
            raise UcfpipeError(f"{where} must be a table with one of choices = [...], int = [LOW, HIGH], float = [LOW, HIGH]")
        kinds = [k for k in KINDS if k in spec]
        if len(kinds) != 1:
            raise UcfpipeError(f"{where} needs exactly one of choices, int, float; got {', '.join(sorted(spec)) or 'none'}")
        kind = kinds[0]
        extra = set(spec) - KEYS[kind]
        if extra:
            raise UcfpipeError(f"{where}: unknown key {sorted(extra)[0]!r} for a {kind} setting; allowed: {', '.join(sorted(KEYS[kind]))}")
        _check_spec(where, kind, spec, known[name], name)
        _check_when(where, spec.get("when"), data, known)
    return data


def _check_spec(where: str, kind: str, spec: dict, hint: type, name: str) -> None:
    if kind == "choices":
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UcfpipeError(f"{where}: choices must be a non-empty list")
        for value in choices:
            if not _fits_type(value, hint):
                raise UcfpipeError(f"{where}: choice {value!r} is not of type {hint.__name__}")
            if name in CHOICES and value not in CHOICES[name]:
                raise UcfpipeError(f"{where}: choice {value!r} is not one of {', '.join(CHOICES[name])}")
        if len(set(map(repr, choices))) != len(choices):
            raise UcfpipeError(f"{where}: choices repeat a value")
        return
    wanted = int if kind == "int" else float
    if hint is not wanted and not (kind == "int" and hint is float):
        raise UcfpipeError(f"{where} is a {hint.__name__} setting: give it {'choices' if hint in (str, bool) else hint.__name__ + ' = [LOW, HIGH]'}, not {kind}")
    bounds = spec[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_fits_type(b, wanted) for b in bounds)):
        raise UcfpipeError(f"{where}: {kind} must be [LOW, HIGH] of two {wanted.__name__}s, got {bounds!r}")
    low, high = bounds
    if low > high:
        raise UcfpipeError(f"{where}: the range [{low}, {high}] is empty (LOW > HIGH)")
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise UcfpipeError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise UcfpipeError(f"{where}: a log range needs LOW > 0, got {low} (list 0 as a choice instead)")
    if step is not None:
        if log:
            raise UcfpipeError(f"{where}: step cannot be combined with log = true")
        if not _fits_type(step, wanted) or step <= 0:
            raise UcfpipeError(f"{where}: step must be a positive {wanted.__name__}, got {step!r}")
        if kind == "int" and (high - low) % step:
            raise UcfpipeError(f"{where}: the range [{low}, {high}] is not a whole number of steps of {step}")


def _check_when(where: str, when, data: dict, known: dict) -> None:
    if when is None:
        return
    if not isinstance(when, dict) or not when:
        raise UcfpipeError(f"{where}: when must be a table setting = [values], e.g. when = {{ cell = [\"lstm\"] }}")
    for other, values in when.items():
        if other not in data or "choices" not in data[other]:
            raise UcfpipeError(f"{where}: when names {other!r}, which the space does not list as choices")
        if list(data).index(other) > list(data).index(where.rsplit(": ", 1)[-1]):
            raise UcfpipeError(f"{where}: when names {other!r}, which must come before it in the file")
        if not isinstance(values, list) or not set(map(repr, values)) & set(map(repr, data[other]["choices"])):
            raise UcfpipeError(f"{where}: when {other} = {values!r} must list some of its choices")


def _fits_type(value, hint: type) -> bool:
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, hint)


def applies(spec: dict, chosen: dict) -> bool:
    """Whether a setting is in play given the values `chosen` above it (its `when`, if any, holds)."""
    return all(chosen.get(other) in values for other, values in (spec.get("when") or {}).items())


def suggest(trial, space: dict) -> dict:
    """The trial's values, in the file's order (a `when` sees the values chosen above it)."""
    params: dict = {}
    for name, spec in space.items():
        if not applies(spec, params):
            continue
        if "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif "int" in spec:
            params[name] = trial.suggest_int(name, *spec["int"], step=spec.get("step", 1), log=spec.get("log", False))
        else:
            params[name] = trial.suggest_float(name, *spec["float"], step=spec.get("step"), log=spec.get("log", False))
    return params


def defaults_in(space: dict, config: TrainConfig, source: str = "the space") -> dict:
    """train's values (from `config`) of the space's settings: trial 0. A value outside its range is refused."""
    params: dict = {}
    for name, spec in space.items():
        if not applies(spec, params):
            continue
        value = getattr(config, name)
        if "choices" in spec:
            inside = value in spec["choices"]
        else:
            low, high = spec.get("int") or spec.get("float")
            step = spec.get("step")
            inside = low <= value <= high and (step is None or math.isclose(((value - low) / step) % 1, 0, abs_tol=1e-9)
                                               or math.isclose(((value - low) / step) % 1, 1, abs_tol=1e-9))
        if not inside:
            raise UcfpipeError(f"{source}: {name}: train's value {value!r} (trial 0 starts from it) is outside "
                               f"{spec.get('choices') or spec.get('int') or spec.get('float')}; widen the range or "
                               f"set {name} in --config")
        params[name] = value
    return params


def space_hash(space: dict) -> str:
    return hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:16]
