"""CLI tests run `store ...` in-process against their own SQLite file, one per test module.

The CLI opens its own engine from STORE_* environment variables, exactly as in production,
so these tests do not use the shared transaction fixtures of tests/conftest.py.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from store import security
from store.cli.main import main
from store.db import make_engine, make_sessionmaker
from tests.cli._support import Result, Run

security.use_cheap_hashing_for_tests()

ADMIN_PASSWORD = "admin-password-123"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data directory (and SQLite database) shared by the tests of one module.

    The operator tests of a module build on each other like an operator's session (an
    administrator, then accounts, publishers, products...): run them in file order on one
    worker (scripts/test uses ``--dist loadfile``).
    """
    return tmp_path_factory.mktemp("store-cli")


@pytest.fixture
def database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'store.db'}"


@pytest.fixture(autouse=True)
def cli_env(monkeypatch: pytest.MonkeyPatch, data_dir: Path, database_url: str) -> None:
    """Point Settings at this module's data directory, with no .env file in the way."""
    for name in list(os.environ):
        if name.startswith("STORE_") and name != "STORE_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("STORE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("STORE_DATABASE_URL", database_url)
    monkeypatch.setenv("STORE_ENVIRONMENT", "test")
    monkeypatch.chdir(data_dir)


@pytest.fixture
def open_sessions() -> list[Session]:
    """The test's own sessions on the CLI's database (``db``)."""
    return []


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    open_sessions: list[Session],
) -> Run:
    """Run `store ARGS...` in-process; returns its exit code, stdout and stderr.

    The test's own session commits first: the command then sees what the test wrote, and
    on SQLite the test's transaction no longer holds the write lock the command needs."""

    def _run(*argv: str, stdin: str | None = None) -> Result:
        for session in open_sessions:
            session.commit()
        capsys.readouterr()
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _run


@pytest.fixture
def db(database_url: str, open_sessions: list[Session]) -> Iterator[Session]:
    """A session on the CLI's database, to prepare and check what the commands do."""
    engine = make_engine(database_url)
    session = make_sessionmaker(engine)()
    open_sessions.append(session)
    try:
        yield session
    finally:
        session.close()
        engine.dispose()
