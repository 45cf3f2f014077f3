"""Stars under concurrency: many processes' transactions starring at once count each
account once (the star row's key decides), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import migrate
from store.accounts import service as accounts
from store.db import make_engine, make_sessionmaker, session_scope
from store.registry import hub, stars
from tests.factories import make_account
from tests.pg import empty_database

FANS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path, "star_races") as url:
        yield url


def test_concurrent_stars_count_each_account_once(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            for i in range(FANS):
                make_account(session, f"fan{i}")
            hub.set_visibility(session, name="fan0/app", visibility="public")
        errors: list[BaseException] = []
        start = threading.Barrier(FANS * 2)

        def star(index: int) -> None:
            try:
                start.wait(timeout=10)
                with session_scope(factory) as own:
                    account = accounts.get_account_by_username(own, f"fan{index % FANS}")
                    stars.star(own, account=account, name="fan0/app")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=star, args=(i,)) for i in range(FANS * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Two stars by the same account at the same moment: one inserts, the other waits
        # for it and then does nothing (PostgreSQL), or waits for the write lock (SQLite).
        assert not errors, errors
        with factory() as session:
            repo = hub.get_repository(session, "fan0/app")
            assert repo is not None and repo.star_count == FANS
    finally:
        engine.dispose()
