"""Ensembles: several training runs of one split and cache (other seeds and/or cells) in one directory.

    OUT/member-<cell>-seed<k>/   each a normal run directory (`ucfpipe eval --run` works on it alone)
    OUT/ensemble.json            the members, the cache fingerprint and split they share
    OUT/metrics.json ...         written by `ucfpipe eval --run OUT`: the members' and the ensemble's figures

The ensemble's class probabilities are the mean of its members' probabilities.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ucfpipe.config import CELLS, TrainConfig
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import write_json
from ucfpipe.stage_two import runs

FORMAT = "ucfpipe-ensemble/1"
ENSEMBLE = "ensemble.json"


def is_ensemble(directory: str | Path) -> bool:
    return (Path(directory) / ENSEMBLE).is_file()


def member_name(cell: str, seed: int) -> str:
    return f"member-{cell}-seed{seed}"


def members_plan(config: TrainConfig, seeds: list[int], cells: list[str]) -> list[tuple[str, TrainConfig]]:
    for cell in cells:
        if cell not in CELLS:
            raise UcfpipeError(f"--cells must name cells of {', '.join(CELLS)}; got {cell!r}")
    if any(seed < 0 for seed in seeds):
        raise UcfpipeError(f"--seeds must be non-negative integers, got {seeds}")
    seeds = seeds or [config.seed]
    cells = cells or [config.cell]
    if len(seeds) * len(cells) < 2:
        raise UcfpipeError("an ensemble needs at least two members: pass --seeds 1,2,3 and/or --cells lstm,gru")
    out = Path(config.out)
    # Validated again: a member's cell has its own rules (the transformer's heads, no bidirectional).
    return [(member_name(cell, seed),
             dataclasses.replace(config, cell=cell, seed=seed, out=str(out / member_name(cell, seed))).validate())
            for cell in cells for seed in seeds]


def train(config: TrainConfig, seeds: list[int], cells: list[str], log=print, verbose: int = 2) -> dict:
    """Train every member into `config.out`, then write ensemble.json. Members already finished there (an
    earlier interrupted `train --seeds`) are kept, not retrained."""
    from ucfpipe.stage_two import train as stage

    config.validate()
    plan = members_plan(config, seeds, cells)
    out = Path(config.out)
    if (out / runs.RUN).exists():
        raise UcfpipeError(f"{out} is a single training run; choose another --out for the ensemble")
    if out.exists() and (not out.is_dir() or any(p.name not in {m for m, _ in plan} | {ENSEMBLE} for p in out.iterdir())):
        raise UcfpipeError(f"--out {out} exists and holds other files than this ensemble's members; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "members": [name for name, _ in plan], "status": "running",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(out / ENSEMBLE, record)
    summaries = {}
    for number, (name, member) in enumerate(plan, 1):
        member_dir = Path(member.out)
        if (member_dir / runs.RUN).is_file() and runs.Run(member_dir).finished:
            log(f"member {number}/{len(plan)} {name}: already trained, kept")
            continue
        log(f"member {number}/{len(plan)} {name}: cell {member.cell}, seed {member.seed}")
        resume = (member_dir / runs.RUN).is_file()
        summaries[name] = stage.run(member, resume=resume, log=log, verbose=verbose)
    finish(out, record)
    log(f"ensemble of {len(plan)} members in {out}; next: ucfpipe eval --run {out}")
    return {"ensemble": str(out), "members": record["members"], "summaries": summaries}


def finish(out: Path, record: dict) -> dict:
    """Check the trained members belong together, then mark the ensemble at `out` finished."""
    members = load_members(out, require_finished=True, record={**record, "status": "finished"})
    record.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), fingerprint=members[0].fingerprint,
                  split=members[0].split)
    write_json(Path(out) / ENSEMBLE, record)
    return record


def load_run_or_ensemble(directory: str | Path) -> list[runs.Run]:
    """What evaluate, predict and export score with: an ensemble's members, or the one finished run at `directory`."""
    if is_ensemble(directory):
        return load_members(directory)
    run = runs.Run(directory)
    run.require_finished()
    return [run]


def load_members(directory: str | Path, require_finished: bool = True, record: dict | None = None) -> list[runs.Run]:
    """The member runs of the ensemble at `directory`, checked to share classes, split and cache fingerprint."""
    directory = Path(directory)
    fix = f"rerun the `ucfpipe train --seeds ... --out {directory}` that made it"
    if record is None:
        if not is_ensemble(directory):
            raise UcfpipeError(f"{directory} is not an ensemble directory (no {ENSEMBLE}); pass the --out of `ucfpipe train --seeds`")
        record = runs.read_json(directory / ENSEMBLE, {}, fix)
    if record.get("format") != FORMAT:
        raise UcfpipeError(f"{directory / ENSEMBLE} is not a {FORMAT} record (format {record.get('format')!r})")
    if record.get("status") != "finished":
        raise UcfpipeError(f"{directory} is an unfinished ensemble; rerun the same `ucfpipe train --seeds ... --out {directory}` "
                           "to train the missing members")
    runs.check_shape(directory / ENSEMBLE, record, {"members": "a list"}, fix)
    members = [runs.Run(directory / name) for name in record["members"]]
    if not members:
        raise UcfpipeError(f"{directory / ENSEMBLE} lists no members")
    first = members[0]
    for member in members:
        if require_finished:
            member.require_finished()
        if member.fingerprint != first.fingerprint:
            raise UcfpipeError(
                f"ensemble members {first.directory.name} and {member.directory.name} were trained on feature caches of "
                f"different fingerprints ({first.fingerprint} vs {member.fingerprint}); an ensemble needs one cache"
            )
        if member.classes != first.classes or member.split != first.split:
            raise UcfpipeError(
                f"ensemble members {first.directory.name} and {member.directory.name} differ in classes or split; "
                "an ensemble needs one split"
            )
    return members
