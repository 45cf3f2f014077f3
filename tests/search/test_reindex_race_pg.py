"""A full reindex never writes a document older than one another transaction committed
while the reindex ran: documents are read (by worker processes on connections of their own,
or by the reindexing connection at READ COMMITTED) before the batch is written, and a
repository made private, edited or deleted in between keeps what its writer indexed.

Each change is made through the ORM, so its listener writes the fresh document in the same
transaction, as in production."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, func, select, text, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from store import migrate
from store.db import make_engine, make_sessionmaker, read_only_session, session_scope, utcnow
from store.registry.models import HubRepository
from store.search import indexer, service
from store.search.models import SearchDocument
from tests.factories import make_account, make_org
from tests.pg import PG_URL, scratch_database
from tests.search.helpers import make_repo
from tests.search.test_document_writers_race import assert_rebuilt

WAIT_S = 20.0
TARGET = "acme/tool3"
CHANGES = ["private", "edit", "delete"]


def _seeded(engine: Engine) -> Engine:
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        owner = make_account(session, "owner")
        make_org(session, owner, "acme")
        for i in range(6):
            make_repo(session, f"acme/tool{i}", description=f"quartz tool number {i}")
    with engine.begin() as conn:
        indexer.reindex(conn)
        # Indexed long ago (not within the reindex's clock margin), with text out of date:
        # the reindex has every document to write.
        conn.execute(
            update(SearchDocument).values(
                fts_body="outdated", indexed_at=utcnow() - timedelta(days=2)
            )
        )
    return engine


@contextmanager
def _pg() -> Iterator[Engine]:
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("reindex_race") as url:
        engine = make_engine(url)
        try:
            yield _seeded(engine)
        finally:
            engine.dispose()


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    with _pg() as engine:
        yield engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        with _pg() as engine:
            yield engine
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield _seeded(engine)
    finally:
        engine.dispose()


def _change(session: Session, change: str) -> None:
    """Through the ORM: the listener writes the repository's fresh document."""
    repo = session.scalars(select(HubRepository).where(HubRepository.name == TARGET)).one()
    if change == "private":
        repo.private, repo.visibility = True, "private"
    elif change == "edit":
        repo.description = "zircon tool"
    else:
        session.execute(delete(HubRepository).where(HubRepository.id == repo.id))
    session.flush()


def _names(engine: Engine, q: str) -> list[str]:
    """An anonymous search."""
    with read_only_session(make_sessionmaker(engine)) as session:
        return sorted(h.doc.name for h in service.search(session, q=q, per_page=100).hits)


def _assert_fresh(engine: Engine, change: str) -> None:
    quartz = _names(engine, "quartz")
    others = [f"acme/tool{i}" for i in range(6) if i != 3]
    if change == "edit":
        assert quartz == others
        assert _names(engine, "zircon") == [TARGET]
    else:
        # Private: not found by an anonymous search; deleted: found by nobody.
        assert quartz == others
    with engine.connect() as conn:
        docs = dict(conn.execute(select(SearchDocument.name, SearchDocument.fts_body)).all())
        target = conn.scalar(select(HubRepository.id).where(HubRepository.name == TARGET))
    assert (TARGET in docs) == (change != "delete")
    assert sorted(n for n, body in docs.items() if body == "outdated") == []
    if change == "delete":
        assert target is None


def _hooked_write(
    monkeypatch: pytest.MonkeyPatch, before: Callable[[Connection], None]
) -> list[str]:
    """``indexer.write`` that runs ``before(conn)`` ahead of the reindex's first write of
    hub documents (read, not yet written)."""
    write = indexer.write
    calls: list[str] = []

    def hooked(conn: Connection, source: str, *args: Any, **kwargs: Any) -> int:
        if source == "hub" and "hub" not in calls:
            calls.append("hub")
            before(conn)
        return write(conn, source, *args, **kwargs)

    monkeypatch.setattr(indexer, "write", hooked)
    return calls


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
@pytest.mark.parametrize("change", CHANGES)
def test_a_change_committed_before_the_batch_is_written_is_kept(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str, workers: int
) -> None:
    """The batch's documents are read (by a worker, or by the reindexing connection
    itself), then another transaction changes a repository and commits, then the batch is
    written: the stored document is the one that transaction wrote (built again from the
    rows), and after the swap an anonymous search does not find a repository made private."""
    factory = make_sessionmaker(pg_engine)

    def commit_change(_conn: Connection) -> None:
        with session_scope(factory) as session:
            _change(session, change)

    calls = _hooked_write(monkeypatch, commit_change)
    with pg_engine.begin() as conn:
        indexer.reindex(conn, workers=workers, committed=True)
    assert calls == ["hub"]
    _assert_fresh(pg_engine, change)


@pytest.mark.parametrize("change", ["private", "edit"])
def test_a_writer_that_has_not_committed_is_waited_for(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """Another transaction has changed the repository and written its document but not
    committed when the reindex writes the batch: the reindex waits for it
    (pg_blocking_pids), and once it commits, its document is the one kept."""
    factory = make_sessionmaker(pg_engine)
    read, go = threading.Event(), threading.Event()
    pids: list[int] = []
    errors: list[BaseException] = []

    def pause(conn: Connection) -> None:
        pids.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        read.set()
        if not go.wait(WAIT_S):
            raise TimeoutError("never resumed")

    _hooked_write(monkeypatch, pause)

    def run() -> None:
        try:
            with pg_engine.begin() as conn:
                indexer.reindex(conn, workers=0, committed=True)
        except BaseException as exc:  # reported below
            errors.append(exc)
            read.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert read.wait(WAIT_S) and not errors
        with session_scope(factory) as session:
            _change(session, change)
            indexer.write_pending(session)  # its document written, not committed
            mine = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            go.set()
            deadline = time.monotonic() + WAIT_S
            with pg_engine.connect() as probe:
                while True:
                    blockers = probe.execute(
                        text("SELECT pg_blocking_pids(:pid)"), {"pid": pids[0]}
                    ).scalar_one()
                    probe.rollback()
                    if mine in blockers:
                        break
                    assert thread.is_alive() and time.monotonic() < deadline, (
                        "the reindex never waited for the uncommitted change"
                    )
                    time.sleep(0.01)  # polling for the wait, not ordering anything
    finally:
        go.set()
        thread.join(WAIT_S)
    assert not errors
    _assert_fresh(pg_engine, change)


@pytest.mark.parametrize("change", CHANGES)
def test_a_full_reindex_keeps_a_change_committed_while_it_ran(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """``store search reindex`` (indexer.full_reindex) with a change committed right after
    the repositories' documents were read: the index it leaves holds the fresh document."""
    factory = make_sessionmaker(engine)
    build = indexer.hub_documents
    done: list[bool] = []

    def read_then_change(conn: Connection, ids: Any, **kwargs: Any) -> list[Any]:
        docs = build(conn, ids, **kwargs)
        if not done and any(d["name"] == TARGET for d in docs):
            done.append(True)
            with session_scope(factory) as session:
                _change(session, change)
        return docs

    monkeypatch.setattr(indexer, "hub_documents", read_then_change)
    indexer.full_reindex(engine, batch=4, workers=0)
    assert done == [True]
    _assert_fresh(engine, change)


def test_a_repository_added_while_a_reindex_runs_keeps_its_document(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository created (and indexed by its writer) after the reindex listed the ids:
    the reindex's sweep of documents whose rows are gone leaves its document."""
    factory = make_sessionmaker(pg_engine)
    added: list[uuid.UUID] = []

    def create(_conn: Connection) -> None:
        with session_scope(factory) as session:
            added.append(make_repo(session, "acme/obsidian", description="volcanic glass").id)

    _hooked_write(monkeypatch, create)
    with pg_engine.begin() as conn:
        indexer.reindex(conn, workers=0, committed=True)
    assert added
    assert _names(pg_engine, "volcanic") == ["acme/obsidian"]


def test_documents_left_as_they_are_stay_unlocked(pg_engine: Engine) -> None:
    """Only the documents a batch changes stay locked until the reindex commits: a writer
    of a document the reindex read again (written recently, within the clock margin) but
    left as it was does not wait for the rest of the reindex."""
    with pg_engine.begin() as conn:
        indexer.reindex(conn)
        conn.execute(
            update(SearchDocument)
            .where(SearchDocument.name != TARGET)
            .values(fts_body="", indexed_at=utcnow() - timedelta(days=2))
        )
        conn.execute(
            update(SearchDocument).where(SearchDocument.name == TARGET).values(indexed_at=utcnow())
        )
    with pg_engine.begin() as conn:
        counts = indexer.reindex(conn, workers=0, committed=True, rebuild=False)
        assert counts["changed"] == 5
        ids = dict(conn.execute(select(SearchDocument.name, SearchDocument.id)).all())
        with pg_engine.connect() as other:
            # NOWAIT: fails at once on a row the reindexing transaction holds.
            probe = text("SELECT 1 FROM search_documents WHERE id = :id FOR UPDATE NOWAIT")
            other.execute(probe, {"id": ids[TARGET]})
            other.rollback()
            with pytest.raises(OperationalError, match="could not obtain lock"):
                other.execute(probe, {"id": ids["acme/tool0"]})


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_committed_between_the_read_and_the_lock_is_kept(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """The stored documents are read, then those the batch will write are locked: a change
    committed in between (here, right before that lock) is seen, and the documents it
    touched built again from the rows, under the lock."""
    factory = make_sessionmaker(pg_engine)
    stored = indexer._stored
    locks: list[bool] = []

    def hooked(conn: Connection, source: str, ref_ids: Any, *, lock: bool = False) -> Any:
        if lock and source == "hub":
            locks.append(True)
            if len(locks) == 1:
                with session_scope(factory) as session:
                    _change(session, change)
        return stored(conn, source, ref_ids, lock=lock)

    monkeypatch.setattr(indexer, "_stored", hooked)
    with pg_engine.begin() as conn:
        indexer.reindex(conn, workers=0, committed=True)
    assert locks
    _assert_fresh(pg_engine, change)


def test_a_document_another_writer_inserts_during_the_copy_is_kept_once(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repository's document is missing when the reindex reads its batch; another
    transaction inserts it (a refresh) and holds its transaction open while the reindex
    inserts the batch, which waits for it (pg_blocking_pids); the writer commits: the
    reindex neither fails nor doubles the document, and the index is what a reindex of the
    committed rows builds."""
    with pg_engine.begin() as conn:
        conn.execute(delete(SearchDocument).where(SearchDocument.name == TARGET))
        target = conn.scalar(select(HubRepository.id).where(HubRepository.name == TARGET))
    factory = make_sessionmaker(pg_engine)
    read, go = threading.Event(), threading.Event()
    pids: list[int] = []
    errors: list[BaseException] = []

    def pause(conn: Connection) -> None:
        pids.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        read.set()
        if not go.wait(WAIT_S):
            raise TimeoutError("never resumed")

    _hooked_write(monkeypatch, pause)

    def run() -> None:
        try:
            with pg_engine.begin() as conn:
                indexer.reindex(conn, workers=0, committed=True)
        except BaseException as exc:  # reported below
            errors.append(exc)
            read.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert read.wait(WAIT_S) and not errors
        with session_scope(factory) as session:
            indexer.refresh(session, repositories=[target])
            assert indexer.write_pending(session) == 1  # inserted, held uncommitted
            mine = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            go.set()
            deadline = time.monotonic() + WAIT_S
            with pg_engine.connect() as probe:
                while True:
                    blockers = probe.execute(
                        text("SELECT pg_blocking_pids(:pid)"), {"pid": pids[0]}
                    ).scalar_one()
                    probe.rollback()
                    if mine in blockers:
                        break
                    assert thread.is_alive() and time.monotonic() < deadline, (
                        "the reindex never waited for the uncommitted insert"
                    )
                    time.sleep(0.01)  # polling for the wait, not ordering anything
    finally:
        go.set()
        thread.join(WAIT_S)
    assert not thread.is_alive()
    assert not errors, errors
    with pg_engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(SearchDocument.name == TARGET)) == 1
    assert_rebuilt(pg_engine)
    assert _names(pg_engine, "quartz") == [f"acme/tool{i}" for i in range(6)]
