"""Transactions that write search documents in several statements, in opposite orders.

A transaction's documents are written just before it commits (``indexer.write_pending``),
all of them at once: on PostgreSQL it locks them in one statement, in (source, ref_id)
order, so two or three writers of overlapping documents wait for each other in a line and
never in a circle, whatever order their own statements (flushes, ``refresh`` calls, pull
refreshes) came in. Each writer here makes its first change, meets the others at a
barrier, makes its second: were the documents locked as each statement ran, every one of
them would then wait for the next (a deadlock, PostgreSQL ending one). All commit; the
index is what a reindex builds from the rows.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store.db import make_sessionmaker, session_scope
from store.http_errors import install_error_handlers
from store.registry import hub
from store.registry.models import HubRepository
from store.search import indexer, service
from store.search.models import SearchDocument
from tests.search.helpers import make_repo
from tests.search.test_document_writers_race import WAIT_S, assert_rebuilt, pg_engine

Step = Callable[[Session, uuid.UUID], None]


@pytest.fixture
def pg() -> Iterator[Engine]:
    yield from pg_engine("lockorder")


def _repos(engine: Engine, count: int) -> list[uuid.UUID]:
    with session_scope(make_sessionmaker(engine)) as session:
        return [
            make_repo(session, f"acme/r{i}", description="quartz", pull_count=1).id
            for i in range(count)
        ]


def _refresh(session: Session, repo: uuid.UUID) -> None:
    """A writer around the ORM re-indexes the repository."""
    indexer.refresh(session, repositories=[repo])


def _star(session: Session, repo: uuid.UUID) -> None:
    """Listener: the repository starred (its row and, at the commit, its document)."""
    session.get_one(HubRepository, repo).star_count += 1
    session.flush()


def _pulls(session: Session, repo: uuid.UUID) -> None:
    """The pull refresh of a repository whose pulls were counted (popularity moves)."""
    hub.refresh_search(session, [repo])


def _cross(engine: Engine, writers: list[tuple[Step, uuid.UUID, Step, uuid.UUID]]) -> None:
    """Each writer on a thread of its own: its first step, all meet, its second, commit.
    None of them may fail."""
    barrier = threading.Barrier(len(writers), timeout=WAIT_S)
    errors: list[BaseException] = []
    factory = make_sessionmaker(engine)

    def run(first: Step, a: uuid.UUID, second: Step, b: uuid.UUID) -> None:
        try:
            with session_scope(factory) as session:
                first(session, a)
                barrier.wait()
                second(session, b)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=w, daemon=True) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def _count_pulls(engine: Engine, repos: list[uuid.UUID]) -> None:
    """Pulls counted and committed (as hub.count_pull does, out of the indexer's sight)."""
    with engine.begin() as conn:
        conn.execute(
            update(HubRepository)
            .where(HubRepository.id.in_(repos))
            .values(pull_count=HubRepository.pull_count + 1000)
        )


def _assert_in_step(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                select(HubRepository.id, HubRepository.pull_count + HubRepository.star_count)
            ).all()
        )
        docs = dict(
            conn.execute(
                select(SearchDocument.ref_id, SearchDocument.pull_count + SearchDocument.star_count)
            ).all()
        )
    assert docs == rows
    assert_rebuilt(engine)


def test_two_writers_refreshing_in_opposite_orders_both_commit(pg: Engine) -> None:
    p, q = _repos(pg, 2)
    _cross(pg, [(_refresh, p, _refresh, q), (_refresh, q, _refresh, p)])
    _assert_in_step(pg)


def test_three_writers_in_a_circle_all_commit(pg: Engine) -> None:
    p, q, r = _repos(pg, 3)
    _cross(pg, [(_refresh, p, _refresh, q), (_refresh, q, _refresh, r), (_refresh, r, _refresh, p)])
    _assert_in_step(pg)


def test_flushes_and_pull_refreshes_in_opposite_orders_all_commit(pg: Engine) -> None:
    """Each writer stars one repository (its row locked too) and then refreshes the pull
    count of the other's; both documents move (popularity) in both transactions."""
    p, q = _repos(pg, 2)
    _count_pulls(pg, [p, q])
    _cross(pg, [(_star, p, _pulls, q), (_star, q, _pulls, p)])
    _assert_in_step(pg)


def test_a_transaction_locks_its_documents_once(pg: Engine) -> None:
    """Two flushes, a refresh and a pull refresh: one statement locks documents."""
    p, q, r = _repos(pg, 3)
    _count_pulls(pg, [r])
    locks: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        if "FOR UPDATE" in sql and "search_documents" in sql:
            locks.append(sql)

    event.listen(pg, "before_cursor_execute", record)
    try:
        with session_scope(make_sessionmaker(pg)) as session:
            _star(session, p)
            _star(session, q)
            _refresh(session, q)
            _pulls(session, r)
    finally:
        event.remove(pg, "before_cursor_execute", record)
    assert len(locks) == 1, locks
    _assert_in_step(pg)


def test_a_transaction_finds_its_own_changes(session_factory: sessionmaker[Session]) -> None:
    """Every backend: a transaction's documents are written before it commits, or when it
    searches, which finds its own changes (a session of its own: the fixture's writes its
    documents at each flush)."""
    session = session_factory()
    repo = make_repo(session, "acme/opal", description="pearl gem")
    assert [h.doc.name for h in service.search(session, q="pearl").hits] == ["acme/opal"]
    repo.description = "jade gem"
    session.flush()
    assert [h.doc.name for h in service.search(session, q="jade").hits] == ["acme/opal"]
    assert service.search(session, q="pearl").hits == []
    repo.star_count = 7
    session.flush()
    stars = session.scalar(
        select(SearchDocument.star_count).where(SearchDocument.ref_id == repo.id)
    )
    assert stars == 7
    repo.description = "amber gem"
    session.flush()
    unwritten = session.connection().execute(
        select(SearchDocument.summary).where(SearchDocument.ref_id == repo.id)
    )
    assert unwritten.scalar_one() == "jade gem"  # until the commit or a search
    session.commit()
    assert [h.doc.name for h in service.search(session, q="amber").hits] == ["acme/opal"]
    assert indexer.write_pending(session) == 0
    session.close()


@pytest.mark.parametrize(
    "error", [psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure]
)
def test_a_transaction_the_database_ended_is_answered_try_again(error: type[Exception]) -> None:
    """A request the database ended otherwise (its whole transaction rolled back) is told
    to try again."""
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
