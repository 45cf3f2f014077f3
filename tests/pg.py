"""Scratch PostgreSQL databases for tests, each dropped when its test is done.

Every database a test run creates is named ``store_test_<run>_<label>_<pid>``; the run id
comes from the controlling pytest process (xdist workers inherit it), and at the end of the
run ``tests/conftest.py`` fails the run if any database of this run is still there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.db import make_engine, make_sessionmaker

PG_URL = os.environ.get("STORE_TEST_DATABASE_URL", "")
RUN_ENV = "STORE_TEST_RUN"
PREFIX = "store_test_"


def run_id() -> str:
    return os.environ.setdefault(RUN_ENV, f"r{os.getpid()}")


def server_url(database: str | None = None) -> str:
    """The configured server with the psycopg driver, on ``database`` if given."""
    url = make_url(PG_URL)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def _admin_execute(*statements: str) -> None:
    admin = make_engine(
        server_url(),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )
    try:
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        admin.dispose()


def create_database(label: str) -> str:
    """A new empty database of this run; the caller drops it (``drop_database``)."""
    name = f"{PREFIX}{run_id()}_{label}_{os.getpid()}"[:63]
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return server_url(name)


def drop_database(url: str) -> None:
    name = make_url(url).database
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(label: str, *, migrated: bool = False) -> Iterator[str]:
    """A database of its own for one test or module, migrated if asked, always dropped."""
    url = create_database(label)
    try:
        if migrated:
            engine = make_engine(url)
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
        yield url
    finally:
        drop_database(url)


def leftover_databases() -> list[str]:
    """Databases of this run that still exist (each should have been dropped)."""
    admin = make_engine(server_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :p ORDER BY datname"),
                {"p": f"{PREFIX}{run_id()}\\_%"},
            )
            return [r[0] for r in rows]
    finally:
        admin.dispose()


@contextmanager
def migrated_database(backend: str, directory: Path, label: str) -> Iterator[str]:
    """A migrated database of its own on ``backend``: a SQLite file in ``directory``, or a
    PostgreSQL scratch database named after ``label`` (dropped afterwards)."""
    if backend == "sqlite":
        url = f"sqlite:///{directory / 'store.db'}"
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        yield url
        return
    with scratch_database(label, migrated=True) as url:
        yield url


@contextmanager
def empty_database(backend: str, directory: Path, label: str) -> Iterator[str]:
    """An unmigrated database of its own on ``backend`` for tests whose processes migrate
    and commit for real: a SQLite file under ``directory/data``, or a PostgreSQL scratch
    database named after ``label`` (skipped without STORE_TEST_DATABASE_URL)."""
    if backend == "sqlite":
        (directory / "data").mkdir()
        yield f"sqlite:///{directory / 'data' / 'store.db'}"
        return
    if not PG_URL:
        import pytest

        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database(label) as url:
        yield url


@contextmanager
def scratch_sessions(label: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a migrated scratch database of their own (tests of several connections
    at once); the test is skipped without PostgreSQL."""
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database(label, migrated=True) as url:
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()
