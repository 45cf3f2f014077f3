"""A refresh token rotated by two requests at the same instant (two processes, one copy of
the token each) is rotated once: the same rule as a rotated token presented again, whatever
the timing. On SQLite and PostgreSQL, with real commits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from store import migrate
from store.accounts.models import AccessToken
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.registry import refresh
from store.registry.grants import Principal
from tests.factories import make_account
from tests.pg import empty_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path, "refresh_races") as url:
        yield url


def test_two_rotations_at_once_leave_at_most_one_live_token(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret-key-0123456789",
        environment="test",
    )
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        factory = make_sessionmaker(engine)
        with session_scope(factory) as session:
            alice = make_account(session, "alice")
            principal = Principal(kind="account", subject="alice", account_id=alice.id)
            secret = refresh.issue(session, settings, principal, client_id="docker", now=utcnow())
        assert secret is not None

        # Both requests have read the token (not yet rotated) before either writes.
        both_read = threading.Barrier(2)
        checked = refresh._check

        def check_then_wait(*args: Any) -> Any:
            result = checked(*args)
            # SQLite: the second waits for the write lock, so the first goes on alone
            with contextlib.suppress(threading.BrokenBarrierError):
                both_read.wait(timeout=2)
            return result

        monkeypatch.setattr(refresh, "_check", check_then_wait)
        outcomes: list[Any] = []

        def rotate() -> None:
            with factory() as own:
                try:
                    redeemed = refresh.redeem(own, settings, secret, rotate=True, now=utcnow())
                    outcomes.append(redeemed.secret)
                except refresh.RefreshRefused as exc:
                    outcomes.append(exc)
                own.commit()

        threads = [threading.Thread(target=rotate) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rotated = [o for o in outcomes if isinstance(o, str)]
        refused = [o for o in outcomes if isinstance(o, refresh.RefreshRefused)]
        assert len(rotated) == 1 and len(refused) == 1, outcomes
        # The second presentation is a reuse, as it would be a moment later: the family
        # ends, the token just made included.
        assert refused[0].reused
        with factory() as session:
            family = session.scalars(select(AccessToken).where(AccessToken.kind == "refresh"))
            live = [t for t in family if t.revoked_at is None and t.rotated_at is None]
        assert live == []
    finally:
        engine.dispose()
