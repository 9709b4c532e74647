"""One rule for "one setup": which evaluated runs may be averaged into a mean ± std.

Runs are one setup when they share the dataset, the class list, the feature cache's fingerprint (backbone
and every stage-one setting) and every training setting but those that name a measurement (the split and
seed) or a place (folders). The text, markdown and HTML reports all ask `verdict`, so they never disagree;
where it says no, they print the runs' figures without a mean, and its one line says why."""

from __future__ import annotations

import json
from pathlib import Path

from ucfpipe.config import TrainConfig, to_dict
from ucfpipe.stage_two import ensemble, runs

# What may differ between runs of one setup: the split and seed measured over, where things are, and how
# much of the features is held in memory (the same numbers either way).
PER_RUN = ("split", "seed", "out", "features", "splits", "memory_limit_gb")
NO_MEAN = "no mean ± std: the runs are not one setup"


def recorded(directory: str | Path) -> list[runs.Run]:
    """The run, or each member of an ensemble; [] when the directory holds neither. `Run` checks run.json's shape
    (one line naming the file, never a traceback on a damaged record)."""
    directory = Path(directory)
    folders = ([directory] if (directory / runs.RUN).is_file()
               else sorted(p.parent for p in directory.glob(f"*/{runs.RUN}")))
    return [runs.Run(folder) for folder in folders]


def of_run(directory: str | Path, metrics: dict) -> dict:
    """What makes a run's figures comparable to another's: dataset, classes, cache and training settings (an
    ensemble's: its members' settings, a value per member where they differ, and how many there are)."""
    members = recorded(directory)
    # A setting added after a run was made (e.g. `heads`) is read as its default, what that run trained with.
    defaults = to_dict(TrainConfig()) if members else {}
    settings: dict = {}
    for key in sorted(({k for run in members for k in run.settings} | set(defaults)) - set(PER_RUN)):
        values = [run.settings.get(key, defaults.get(key)) for run in members]
        settings[key] = values[0] if all(v == values[0] for v in values) else values
    if members:
        settings["members"] = len(members) if ensemble.is_ensemble(directory) else 1
    return {"dataset": metrics.get("dataset"), "classes": list(members[0].classes) if members else None,
            "fingerprint": metrics.get("fingerprint"), "backbone": metrics.get("backbone"), "settings": settings}


def _groups(named: list[tuple[str, dict]], value_of, label, form: str = "{value}: {runs}", between: str = "; ") -> str:
    """'value: run, run; value: run' for the runs grouped by `value_of(setup)`, each value as `label` writes it."""
    groups: dict[str, tuple[object, list[str]]] = {}
    for name, setup in named:
        value = value_of(setup)
        groups.setdefault(json.dumps(value, sort_keys=True), (value, []))[1].append(name)
    return between.join(form.format(value=label(value), runs=", ".join(names)) for value, names in groups.values())


def _class_label(named: list[tuple[str, dict]]):
    lists = [setup["classes"] or [] for _, setup in named]
    if len({len(classes) for classes in lists}) > 1:
        return lambda classes: f"{len(classes or [])} classes"
    first = next((i for i in range(len(lists[0])) if len({classes[i] for classes in lists}) > 1), None)
    if first is None:  # one of them unknown (a run directory without run.json)
        return lambda classes: "classes not recorded" if classes is None else f"{len(classes)} classes"
    return lambda classes: f"class {first + 1} {classes[first]}"


def _setting(key: str) -> str:
    return "ensemble members" if key == "members" else "--" + key.replace("_", "-")


def difference(named: list[tuple[str, dict]]) -> str | None:
    """None when the runs (name, `of_run`) are one setup; otherwise what sets them apart, in a few words."""
    if len(named) < 2:
        return None
    for key, what, label in (("dataset", "are of different datasets", str),
                             ("classes", "have different class lists", None),
                             ("backbone", "used different backbones", str),
                             ("fingerprint", "used feature caches of different fingerprints", str)):
        if len({json.dumps(setup[key]) for _, setup in named}) > 1:
            return f"they {what} ({_groups(named, lambda s: s[key], label or _class_label(named))})"
    settings = [setup["settings"] for _, setup in named]
    keys = sorted({k for s in settings for k in s if len({json.dumps(t.get(k)) for t in settings}) > 1})
    if not keys:
        return None
    shown = "; ".join(f"{_setting(key)} " + _groups(named, lambda s: s["settings"].get(key), json.dumps, "{value} in {runs}", ", ")
                      for key in keys[:3])
    return f"they were trained with different settings ({shown}{'; …' if len(keys) > 3 else ''})"


def verdict(named: list[tuple[str, dict]]) -> str | None:
    """None when a mean ± std over the runs means something; otherwise the one line every report prints."""
    why = difference(named)
    return None if why is None else f"{NO_MEAN}: {why}"
