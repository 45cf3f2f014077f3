"""Document locks taken by one transaction in two statements (PostgreSQL).

Every writer of search documents locks them in one statement in (source, ref_id) order
(``indexer._lock``), so two writers of one flush each never wait for each other in a
circle. A transaction that writes documents in two flushes (or two ``refresh`` calls)
takes its second set after the first, and against another doing the same the other way
round that is a circle: PostgreSQL finds it (after ``deadlock_timeout``) and ends one of
the two; nothing of that one is written, the other commits, and a request ended so is
answered 503 "try again" (store.http_errors), not 500. Which documents a transaction will
write is not known at its first flush, so no lock order can be kept across flushes short
of one writer of documents at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from store.db import make_sessionmaker, session_scope
from store.http_errors import install_error_handlers
from store.registry.models import HubRepository
from store.search import indexer
from tests.search.helpers import make_repo
from tests.search.test_document_writers_race import (
    WAIT_S,
    _pid,
    _wait_blocked,
    assert_rebuilt,
    pg_engine,
)


@pytest.fixture
def pg() -> Iterator[Engine]:
    yield from pg_engine("lockorder")


def test_two_flushes_in_opposite_orders_end_one_transaction_cleanly(pg: Engine) -> None:
    """A has locked P's document, B Q's; B then waits for P, and A for Q: one of them is
    ended with a deadlock, and the index is what a reindex builds."""
    factory = make_sessionmaker(pg)
    with session_scope(factory) as session:
        p, q = (make_repo(session, f"acme/{n}", description="quartz").id for n in ("p", "q"))
    errors: dict[str, BaseException] = {}
    ready = threading.Event()
    pid: list[int] = []

    def other() -> None:
        try:
            with session_scope(factory) as session:
                indexer.refresh(session, repositories=[q])
                pid.append(_pid(session))
                ready.set()
                indexer.refresh(session, repositories=[p])
        except OperationalError as exc:
            errors["other"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=other, daemon=True)
    try:
        with session_scope(factory) as session:
            indexer.refresh(session, repositories=[p])
            thread.start()
            assert ready.wait(WAIT_S) and pid
            assert _wait_blocked(pg, pid[0], _pid(session), thread.is_alive)
            indexer.refresh(session, repositories=[q])
    except OperationalError as exc:
        errors["mine"] = exc
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert len(errors) == 1, errors
    (error,) = errors.values()
    assert isinstance(error, OperationalError)
    assert isinstance(error.orig, psycopg.errors.DeadlockDetected)
    with pg.connect() as conn:
        assert set(conn.scalars(select(HubRepository.id))) == {p, q}
    assert_rebuilt(pg)


@pytest.mark.parametrize(
    "error", [psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure]
)
def test_a_transaction_the_database_ended_is_answered_try_again(error: type[Exception]) -> None:
    """The request that lost (its whole transaction rolled back) is told to try again."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/write")
    def write() -> None:
        raise OperationalError("UPDATE search_documents", {}, error("ended"))

    @app.get("/other")
    def other() -> None:
        raise OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("gone"))

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/write")
        assert response.status_code == 503
        assert response.json()["error"] == "busy"
        assert response.headers["Retry-After"] == "1"
        assert client.get("/other").status_code == 500
