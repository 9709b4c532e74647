"""`ucfpipe merge`: the caches of `extract --shard i/N` runs -> one cache, verified.

Checks that the parts are the N parts of one clip list, made with one fingerprint, and that together they
hold every clip exactly once (clips missing on disk or unreadable are carried over in the report). Shard
files are hard-linked when the parts live on the same file system (no copy), copied otherwise; either way
each one is checked against its part's SHA-256 before it counts. The merged cache appears under its final
name only when complete: a full disk (or any failure) removes the staging directory and changes nothing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ucfpipe.cache.format import FORMAT, file_sha256, shard_name
from ucfpipe.cache.store import FeatureStore
from ucfpipe.cache.writer import write_manifest
from ucfpipe.core.errors import UcfpipeError
from ucfpipe.core.files import disk_full, is_disk_full, replacing_dir


def merge(parts: list[str | Path], out: str | Path) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UcfpipeError(f"{out} already exists and is not empty: choose a new --out for the merged cache")
    if not parts:
        raise UcfpipeError("no part directories given: pass the --out directories of every `extract --shard i/N` run")
    stores = [FeatureStore(part, passed="as a PART (the --out of an `extract --shard i/N` run)") for part in parts]  # each must be a finished cache
    for store in stores:
        if store.manifest["format"] != FORMAT:
            raise UcfpipeError(f"{store.directory} is a {store.manifest['format']} cache without checksums; "
                               "extract that part again with this version of ucfpipe before merging")
    first = stores[0].manifest
    count = first["part"]["count"]
    for store in stores:
        manifest = store.manifest
        if store.fingerprint != stores[0].fingerprint:
            raise UcfpipeError(f"{store.directory} was extracted with other settings than {stores[0].directory}; parts must share one fingerprint")
        if manifest["part"]["count"] != count or manifest["part"]["clip_list"] != first["part"]["clip_list"]:
            raise UcfpipeError(f"{store.directory} is a part of another partition or clip list than {stores[0].directory}")
    indices = sorted(store.manifest["part"]["index"] for store in stores)
    if indices != list(range(count)):
        absent = sorted(set(range(count)) - set(indices))
        repeated = sorted({i for i in indices if indices.count(i) > 1})
        raise UcfpipeError(f"the parts must be 0..{count - 1} of {count}, each once: missing {absent}, repeated {repeated}")
    seen: dict[str, Path] = {}
    for store in stores:
        for video_id in store.video_ids:
            if video_id in seen:
                raise UcfpipeError(f"{video_id} is in both {seen[video_id]} and {store.directory}; a clip must be extracted once")
            seen[video_id] = store.directory
    listed = sum(store.report["listed"] for store in stores)
    missing = [v for store in stores for v in store.report["missing"]]
    failed = {k: v for store in stores for k, v in store.report["failed"].items()}
    if len(seen) + len(missing) + len(failed) != listed:
        raise UcfpipeError(f"the parts account for {len(seen) + len(missing) + len(failed)} of {listed} listed clips; re-run the incomplete part")

    try:
        with replacing_dir(out, out.with_name(out.name + ".merging")) as staging:
            shards, checksums = _gather(stores, staging)
            write_manifest(
                staging, fingerprint=first["fingerprint"], settings=first["settings"], versions=first["versions"],
                config={**first["config"], "shard": "", "out": str(out.resolve())}, shards=shards, checksums=checksums,
                num_clips=len(seen), report={"listed": listed, "missing": sorted(missing), "failed": failed},
                part={"index": 0, "count": 1, "clip_list": first["part"]["clip_list"]},
                merged_from=[str(store.directory.resolve()) for store in stores],
            )
    finally:
        for store in stores:
            store.close()
    FeatureStore(out).close()  # verify: readable, every clip once, one fingerprint
    return {"clips": len(seen), "parts": count, "missing": len(missing), "failed": len(failed), "out": str(out)}


def _gather(stores: list[FeatureStore], staging: Path) -> tuple[list[str], dict]:
    """Link (or copy) every part's shards into `staging` under new names; each must match its SHA-256."""
    shards, checksums = [], {}
    for store in stores:
        for name in store.manifest["shards"]:
            record = store.checksums[name]
            target = staging / shard_name(len(shards))
            try:
                os.link(store.directory / name, target)
            except OSError:
                try:
                    shutil.copyfile(store.directory / name, target)
                except OSError as err:
                    if is_disk_full(err):
                        needed = sum(s.checksums[n]["bytes"] for s in stores for n in s.manifest["shards"])
                        raise disk_full(target, needed) from None
                    raise
            if file_sha256(target) != record["sha256"]:
                raise UcfpipeError(f"{store.directory / name} is damaged (SHA-256 differs from its manifest's); "
                                   "extract that part again before merging")
            shards.append(target.name)
            checksums[target.name] = record
    return shards, checksums
