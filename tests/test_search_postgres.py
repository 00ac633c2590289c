"""`edgegolf search --storage postgresql+psycopg2://...` against a real PostgreSQL server,
started for these tests (tests/builders/postgres.py): the same scenarios tests/test_search.py
runs on SQLite. In CI (CI=true) a server that cannot start fails the tests; elsewhere they
skip and say why."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tests.builders.postgres import PostgresServer, ServerUnavailable  # noqa: E402
from tests.builders.search import (  # noqa: E402
    killed_search_resumes_to_the_requested_total,
    two_workers_share_one_storage_without_repeating_a_trial,
    write_quick_recipe,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres():
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed (pip install -e '.[postgres]')")
    try:
        server = PostgresServer.start()
    except ServerUnavailable as exc:
        _unavailable(f"a PostgreSQL server cannot be started here: {exc}")
    yield server
    server.stop()


@pytest.fixture()
def postgres_url(postgres) -> str:
    """A fresh database per test: each study starts from empty tables."""
    return postgres.create_database(f"edgegolf_{uuid.uuid4().hex[:12]}")


@pytest.fixture()
def quick_recipe(tmp_path) -> Path:
    return write_quick_recipe(tmp_path)


def test_killed_search_on_postgres_resumes_to_the_requested_total(tiny_bert, tmp_path, quick_recipe, postgres_url):
    killed_search_resumes_to_the_requested_total(tiny_bert, tmp_path, quick_recipe, postgres_url, "killed",
                                                 storage_args=("--storage", postgres_url, "--study", "killed"))


def test_two_workers_share_one_postgres_study_without_repeating_a_trial(tiny_bert, tmp_path, quick_recipe,
                                                                        postgres_url):
    two_workers_share_one_storage_without_repeating_a_trial(tiny_bert, tmp_path, quick_recipe, postgres_url, "shared")


def test_workers_opening_one_empty_database_at_once_all_get_the_storage(postgres_url):
    """Each worker creates the tables if they are missing; on PostgreSQL the losers of that race
    get a unique violation on pg_type (optuna's enum types), which open_storage waits out."""
    import threading

    from edgegolf.search.study import open_storage

    start, storages, errors = threading.Barrier(4), [], []

    def worker():
        start.wait()
        try:
            storages.append(open_storage(postgres_url))
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(storages) == 4
    for storage in storages:  # a real PostgreSQL server, at the schema version optuna expects
        assert (storage.engine.dialect.name, storage.engine.dialect.driver) == ("postgresql", "psycopg2")
        assert storage.get_current_version() == storage.get_head_version()
