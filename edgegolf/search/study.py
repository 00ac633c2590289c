"""The Optuna side: storage, the study (created once, then shared and resumed), the sampler,
and trials left RUNNING by a process that was killed.

Optuna's RDB storage is what lets several processes share one search and lets a rerun
continue it: SQLite (`sqlite:///path.db`) for processes on one machine, PostgreSQL
(`postgresql+psycopg2://user:password@host/db`) for processes on several machines.
"""

from __future__ import annotations

import json
import logging
import socket
import time
import warnings
from typing import Any

from edgegolf.extras import require_extra

optuna = require_extra("search", "optuna", needed_by="edgegolf search")
from optuna.trial import TrialState  # noqa: E402  (after the check above)

from edgegolf.bundle import pid_alive
from edgegolf.errors import EdgegolfError, RecipeError

log = logging.getLogger(__name__)

HOST = socket.gethostname()
DIRECTIONS = ["maximize", "minimize", "minimize"]  # accuracy, latency, size
OBJECTIVE_NAMES = ["accuracy", "latency_ms", "size_mb"]


# What the second of two workers creating a fresh storage at once is told, by database.
_CREATION_RACES = (
    "already exists",  # a table the other worker made first (SQLite; PostgreSQL's "relation ... already exists")
    "UNIQUE constraint failed: alembic_version",  # SQLite: the schema version row
    # PostgreSQL: the other worker's CREATE TYPE (optuna's enums) or CREATE TABLE committed first, seen on
    # a real server with four workers opening one empty database: duplicate key value violates unique
    # constraint "pg_type_typname_nsp_index" (tests/test_search_postgres.py)
    "pg_type_typname_nsp_index",
    "alembic_version_pkc",  # PostgreSQL's name for the schema version row's key (the SQLite race above)
)


class StorageError(EdgegolfError):
    """The study storage URL cannot be opened."""


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats: a trial whose process stops beating for `grace_period`
    seconds is marked failed by the next process that asks for a trial, and retried once."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}  # wait for another worker's write instead of failing
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120,
                        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
            except Exception as exc:  # two workers creating the tables at once: the second sees them half made
                if attempt == 4 or not any(words in str(exc) for words in _CREATION_RACES):
                    raise
                # (not the URL: it may hold a password)
                log.debug("another worker is creating the storage's tables (%s); retrying", str(exc).splitlines()[0])
                time.sleep(0.5 + attempt)
    except ImportError as exc:
        raise StorageError(f"storage {url!r} needs a database driver that is not installed ({exc.name or exc}); for "
                           "PostgreSQL: pip install 'edgegolf[postgres]' (psycopg2-binary)") from None
    except Exception as exc:  # sqlalchemy's errors for a malformed URL or an unreachable server
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"storage {url!r} cannot be opened ({first}); give sqlite:///path/to/search.db or "
                           "postgresql+psycopg2://user:password@host:5432/database") from None


def make_sampler(name: str, *, n_trials: int, seed: int | None):
    """Optuna's multi-objective samplers. Both read the budget as the constraints each trial
    sets (`trial.set_constraint`, <= 0 is feasible; Optuna 5's replacement for constraints_func)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed,
                                              n_startup_trials=min(10, max(3, n_trials // 3)))
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 3)))
    raise RecipeError(f"search sampler {name!r} is not accepted; choose one of: tpe, nsga2")


def open_study(storage, name: str, sampler, identity: dict[str, Any], baseline: dict[str, Any]) -> optuna.Study:
    """Create the study, or load it when it exists (a rerun, or another worker).

    `identity` (source, budget, base recipe, search space) is stored with the study: a run
    asking for something else must not mix its trials into it. Only the process that
    creates the study queues the baseline trial (quantization alone)."""
    identity = json.loads(json.dumps(identity, default=str))  # as the storage gives it back: lists, not tuples
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, directions=DIRECTIONS)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler)
        created = False
    if created:
        for key, value in identity.items():
            study.set_user_attr(key, value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(OBJECTIVE_NAMES)
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
        study.set_user_attr(IDENTITY_WRITTEN, True)  # last: other workers wait for it
    else:
        stored = _stored_identity(study, list(identity))
        if stored is None:  # its creator died before writing it all: this run's identity stands
            for key, value in identity.items():
                study.set_user_attr(key, value)
            study.set_user_attr(IDENTITY_WRITTEN, True)
            return study
        for key, value in identity.items():
            if stored[key] != value:
                was, now = _first_difference(stored[key], value, key)
                raise RecipeError(f"study {name!r} was started with {was}; this run asks for {now}: use the same "
                                  f"{key}, or another --study name (or -o)")
    return study


IDENTITY_WRITTEN = "identity_written"


def _stored_identity(study: optuna.Study, keys: list[str], wait_s: float = 60.0) -> dict[str, Any] | None:
    """The identity the study's creator stored, once it has written all of it (it writes one
    attribute at a time, then IDENTITY_WRITTEN); None if that never happens within `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        attrs = study.user_attrs  # read from the storage each time
        if attrs.get(IDENTITY_WRITTEN):
            return {key: attrs.get(key) for key in keys}
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def _first_difference(old: Any, new: Any, path: str) -> tuple[str, str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path} = {old!r}", f"{path} = {new!r}"


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Mark failed the RUNNING trials of processes on this machine that no longer exist
    (killed), and queue their parameters again. Other machines' trials are left to the
    storage's heartbeat."""
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != HOST or pid_alive(int(worker.get("pid", 0))):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "failed",
                                               f"process {worker.get('pid')} ended before the trial finished")
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # another worker got there first
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
        failed.append(trial.number)
        log.warning("trial %d was left running by process %s, which is gone: marked failed, queued again",
                    trial.number, worker.get("pid"))
    return failed


def count(study: optuna.Study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))
