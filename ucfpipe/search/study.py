"""The Optuna study of a search: the storage URL checked before anything is written, the storage opened with
heartbeats (a killed process's trial turns FAIL) and a bounded retry (processes creating one database at once
race on its schema), and the study created once (tagged, trial 0 enqueued) or loaded and checked."""

from __future__ import annotations

import os
import re
import socket
import time
import warnings
import zlib
from pathlib import Path

from ucfpipe.core.errors import UcfpipeError


def worker_name() -> str:
    """This process as a trial records it, host:pid; asked each time, so a forked process names itself."""
    return f"{socket.gethostname()}:{os.getpid()}"


PRUNERS = ("median", "hyperband")
# Seconds between a running trial's heartbeats, and without one before it counts as dead (kill -9, a lost
# machine): UCFPIPE_TUNE_HEARTBEAT="INTERVAL,GRACE" shortens them (the tests do).
HEARTBEAT = (10, 30)


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # ucfpipe prints its own line per trial
    for message in (r"Argument ``heartbeat_interval`` is an experimental feature", r".*fail_stale_trials is experimental",
                    r"The number of trials is too small to compute importances"):
        warnings.filterwarnings("ignore", message=message)


def heartbeat() -> tuple[int, int]:
    given = os.environ.get("UCFPIPE_TUNE_HEARTBEAT")
    if not given:
        return HEARTBEAT
    try:
        interval, grace = (int(part) for part in given.split(","))
    except ValueError:
        raise UcfpipeError(f"UCFPIPE_TUNE_HEARTBEAT must be INTERVAL,GRACE in seconds, e.g. 10,30; got {given!r}") from None
    return interval, grace


def check_url(url: str) -> None:
    """Refuse a malformed URL, a missing driver or a SQLite file in a missing folder, without connecting."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()
    except sqlalchemy.exc.ArgumentError:
        raise UcfpipeError(f"--storage {url} is not a database URL; e.g. sqlite:////abs/path/study.db or "
                           "postgresql+psycopg2://USER@HOST:PORT/DB") from None
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as err:
        raise UcfpipeError(f"--storage {url}: no driver for it here ({str(err).splitlines()[0]}); install it (e.g. "
                           "psycopg2-binary for PostgreSQL)") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:":
            raise UcfpipeError(f"--storage {url}: give a SQLite file, e.g. sqlite:////abs/path/study.db")
        if not Path(database).parent.is_dir():
            raise UcfpipeError(f"--storage {url}: the folder {Path(database).parent} does not exist; create it or "
                               "point --storage elsewhere")


def open_storage(url: str, tries: int = 5):
    """RDBStorage with heartbeats; retries the schema-creation race of processes starting at once (bounded)."""
    import optuna
    import sqlalchemy

    quiet_optuna()
    interval, grace = heartbeat()
    sqlite = url.startswith("sqlite")
    engine = ({"connect_args": {"timeout": 60}} if sqlite else
              {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True})
    for attempt in range(tries):
        try:
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=interval, grace_period=grace, engine_kwargs=engine)
            if sqlite:
                serialise_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            racing = re.search(r"already exists|UNIQUE constraint|duplicate key", str(err))
            if attempt == tries - 1 or not racing:
                first = str(getattr(err, "orig", err)).strip().splitlines()[0]
                raise UcfpipeError(f"--storage {url}: cannot open the database ({first}); check that it runs and "
                                   "the URL") from None
            time.sleep(0.2 * (attempt + 1))


def serialise_sqlite(engine) -> None:
    """Each transaction on a SQLite database takes its write lock first (BEGIN IMMEDIATE). SQLite has no row locks
    (Optuna's SELECT ... FOR UPDATE does nothing there), so two processes could both read an enqueued trial as
    WAITING and both run it (optuna#4002): trial 0, train's defaults, ran twice and the second to finish crashed
    with "Cannot tell a COMPLETE trial". With the lock taken first, a read-then-write is one step. SQLAlchemy's
    recipe for pysqlite: no implicit BEGIN from the driver, our own at each transaction's start."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would begin the driver's way


def default_name(fingerprint: str, split: int) -> str:
    return f"ucfpipe-{fingerprint[:12]}-split{split}"


def sampler_seed(seed: int, worker: bool) -> int:
    """The study seed in the --out process (one process: reproducible); other workers add their own id, else
    every process would draw the same startup trials."""
    return (seed + zlib.crc32(worker_name().encode())) % 2**32 if worker else seed


def make_pruner(name: str, epochs: int):
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def open_study(storage, name: str, tags: dict, defaults: dict, seed: int, worker: bool, pruner, direction: str,
               wait_s: float = 20.0):
    """Create the study (tag it, enqueue train's defaults as trial 0) or load it; a study made for another
    cache, split, space, seed or metric is refused in one line."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=sampler_seed(seed, worker), constant_liar=True)
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        pass
    else:
        for key, value in tags.items():
            study.set_user_attr(key, value)
        study.enqueue_trial(defaults, user_attrs={"default": True})  # only the creator gets here: once
        return study
    try:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise UcfpipeError(f"--study {name}: no such study in the storage; start it with `ucfpipe tune --out DIR "
                           "--storage URL` first, or let a worker create it") from None
    deadline = time.monotonic() + wait_s
    while set(tags) - set(study.user_attrs) and time.monotonic() < deadline:  # its creator may not have tagged it yet
        time.sleep(0.1)
    theirs = {key: study.user_attrs.get(key) for key in tags}
    if theirs != tags:
        differ = ", ".join(f"{key} {theirs[key]!r} (not {tags[key]!r})" for key in tags if theirs[key] != tags[key])
        raise UcfpipeError(f"study {name!r} was made for another search: {differ}; pass another --study NAME or "
                           "--out DIR")
    return study
