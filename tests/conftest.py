"""Test fixtures: real databases (SQLite always, PostgreSQL when configured), migrated with
Alembic once per run, and one rolled-back transaction per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session, sessionmaker

from store import followers, migrate, security
from store.app import create_app
from store.config import Settings
from store.db import make_engine
from tests import pg

security.use_cheap_hashing_for_tests()

PG_URL = pg.PG_URL
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def pytest_configure(config: pytest.Config) -> None:
    followers.install()  # as create_app and the store command do
    if not hasattr(config, "workerinput"):
        pg.run_id()  # set once by the controller; xdist workers inherit it


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a PostgreSQL database it created was left behind (and drop it)."""
    if hasattr(session.config, "workerinput") or not PG_URL:
        return
    leftovers = pg.leftover_databases()
    for url in leftovers:
        pg.drop_database(pg.server_url(url))
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"databases left behind by tests: {', '.join(leftovers)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> Iterator[str]:
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "store.db"
        yield f"sqlite:///{path}"
        return
    url = pg.create_database(worker_id)
    try:
        yield url
    finally:
        pg.drop_database(url)  # whoever asked for it: the engine, or a test on its own


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    return getattr(request.config, "workerinput", {}).get("workerid", "main")


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    conn = engine.connect()
    outer = conn.begin()
    if conn.dialect.name == "postgresql":
        # The decision generation's triggers (migration 0750) run at commit, and this
        # transaction is never committed: here they run at the end of each statement, so
        # the token endpoint's cache sees the changes a test makes. (The tests in other
        # processes, with real commits, check the deferred form.)
        conn.exec_driver_sql("SET CONSTRAINTS ALL IMMEDIATE")
    yield conn
    outer.rollback()
    conn.close()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    # Commits inside the code under test release a SAVEPOINT; the outer transaction is
    # rolled back after the test, so every test starts from the migrated, empty schema.
    return sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


def _write_search_documents(session: Session, _flush_context: object) -> None:
    from store.search import indexer

    indexer.write_pending(session)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    s = session_factory()
    # Never committed, and the app's sessions (on the same connection) read what it
    # flushed: its search documents are written at each flush rather than before a commit
    # (store.search.indexer.write_pending), as the constraints above run per statement.
    event.listen(s, "after_flush_postexec", _write_search_documents)
    yield s
    s.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    app = create_app(settings, migrate=False)
    app.state.engine.dispose()
    app.state.sessionmaker = session_factory
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://store.test") as c:
        yield c
