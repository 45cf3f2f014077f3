"""A full reindex beside live traffic, on SQLite and PostgreSQL (committed transactions on a
database of their own): searches keep answering from the old index while it runs, changes
committed meanwhile are not lost, and every change is visible to other connections' searches
as soon as it commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.catalog.models import Product
from store.db import make_engine, make_sessionmaker, read_only_session, session_scope
from store.registry import hub
from store.registry.models import HubRepository
from store.search import indexer, postgres_fts, service
from store.search.sqlite_fts import SqliteBackend
from tests.factories import make_account, make_org, make_product
from tests.pg import PG_URL, scratch_database
from tests.search.helpers import make_repo, stored_index

WAIT_S = 20.0
# Documents the PostgreSQL catch-up wrote again in the last paused reindex.
caught_up: list[int] = []


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        engine = make_engine(url)
        try:
            yield _seeded(engine)
        finally:
            engine.dispose()
        return
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("reindex_beside") as url:
        engine = make_engine(url)
        try:
            yield _seeded(engine)
        finally:
            engine.dispose()


def _seeded(engine: Engine) -> Engine:
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        owner = make_account(session, "owner")
        acme = make_org(session, owner, "acme")
        make_product(session, acme, owner, "vaultkeeper", title="Vault Keeper", summary="Secrets")
        make_product(session, acme, owner, "logpipe", title="Log Pipe", summary="Shipping logs")
        for i in range(30):
            make_repo(session, f"acme/tool{i}", description=f"quartz tool number {i}")
    with engine.begin() as conn:
        indexer.reindex(conn)
    return engine


def _names(factory: sessionmaker[Session], q: str) -> list[str]:
    with read_only_session(factory) as session:
        if session.get_bind().dialect.name == "postgresql":
            # A search that has to wait for a lock fails instead of hanging.
            session.execute(text("SET LOCAL lock_timeout = '2s'"))
        return [h.doc.name for h in service.search(session, q=q, per_page=100).hits]


def _paused_reindex(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Thread, threading.Event, threading.Event, list[BaseException]]:
    """A full reindex in a thread, paused (transaction open) in the middle of its rebuild:
    on PostgreSQL when the new tables are filled and indexed, before the catch-up and the
    swap; on SQLite when the FTS tables are rebuilt, before the commit."""
    paused, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    caught_up.clear()

    def pause() -> None:
        paused.set()
        if not resume.wait(WAIT_S):
            raise TimeoutError("the test never resumed the reindex")

    if engine.dialect.name == "postgresql":
        catch_up: Callable[..., Any] = postgres_fts._catch_up
        copy: Callable[..., Any] = postgres_fts._copy

        def pause_then_catch_up(*args: Any) -> None:
            pause()
            caught_up.append(0)
            catch_up(*args)

        def counted_copy(conn: Any, docs: Any) -> None:
            if caught_up:
                caught_up[0] += len(docs)
            copy(conn, docs)

        monkeypatch.setattr(postgres_fts, "_catch_up", pause_then_catch_up)
        monkeypatch.setattr(postgres_fts, "_copy", counted_copy)
    else:
        rebuild = SqliteBackend.rebuild

        def rebuild_then_pause(self: SqliteBackend, conn: Any, pool: Any = None) -> None:
            rebuild(self, conn, pool)
            pause()

        monkeypatch.setattr(SqliteBackend, "rebuild", rebuild_then_pause)

    def run() -> None:
        try:
            with engine.begin() as conn:
                indexer.reindex(conn)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            paused.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert paused.wait(WAIT_S), "the reindex never reached its pause"
    return thread, paused, resume, errors


def test_searches_answer_while_a_full_reindex_runs(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = make_sessionmaker(engine)
    before = _names(factory, "quartz")
    assert len(before) == 30
    thread, _paused, resume, errors = _paused_reindex(engine, monkeypatch)
    try:
        assert not errors
        started = time.monotonic()
        during = [_names(factory, "quartz"), _names(factory, "vault"), _names(factory, "qua")]
        elapsed = time.monotonic() - started
    finally:
        resume.set()
        thread.join(WAIT_S)
    assert not errors
    assert during == [before, ["acme/vaultkeeper"], before]
    assert elapsed < 5
    assert _names(factory, "quartz") == before
    if engine.dialect.name == "postgresql":
        # Nobody wrote meanwhile (the documents written by the seed's reindex, minutes
        # ago at most, were read by the fill): nothing to catch up.
        assert caught_up == [0]


@pytest.mark.parametrize("change", ["edit", "pull", "delete"])
def test_changes_committed_during_a_reindex_are_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite writers wait for the reindex to commit (one writer at a time)")
    factory = make_sessionmaker(engine)
    thread, _paused, resume, errors = _paused_reindex(engine, monkeypatch)
    try:
        assert not errors
        with session_scope(factory) as session:
            if change == "edit":
                product = session.scalars(select(Product).where(Product.slug == "logpipe")).one()
                product.summary = "Shipping logs to zircon"
            elif change == "pull":
                hub.record_pull(session, name="acme/tool7", at=datetime.now(UTC))
            else:
                session.execute(delete(HubRepository).where(HubRepository.name == "acme/tool3"))
    finally:
        resume.set()
        thread.join(WAIT_S)
    assert not errors
    # Only what the change rewrote (a listing's document, a repository's and its listing's,
    # or nothing for a deletion) is written again.
    assert caught_up[0] == {"edit": 1, "pull": 1, "delete": 0}[change]
    if change == "edit":
        assert _names(factory, "zircon") == ["acme/logpipe"]
    elif change == "pull":
        with read_only_session(factory) as session:
            hits = service.search(session, q="acme/tool7").hits
            assert [(h.doc.name, h.doc.pull_count) for h in hits[:1]] == [("acme/tool7", 1)]
    else:
        assert "acme/tool3" not in _names(factory, "quartz")
        assert len(_names(factory, "quartz")) == 29
    with engine.connect() as conn:
        # The swapped-in tables hold exactly one row per document.
        for table in ("search_fts_terms", "search_fts_fields"):
            assert (
                conn.scalar(
                    text(
                        f"SELECT count(*) FROM search_documents d FULL JOIN {table} t "  # noqa: S608
                        "ON t.id = d.id WHERE t.id IS NULL OR d.id IS NULL"
                    )
                )
                == 0
            )


def test_changes_are_searchable_by_others_once_committed(engine: Engine) -> None:
    """A pull, a listing edit and a new repository, each in its own committed transaction,
    are found by another connection's search at once (no reindex, no delay)."""
    factory = make_sessionmaker(engine)
    with read_only_session(factory) as reader:
        assert [h.doc.pull_count for h in service.search(reader, q="acme/tool5").hits[:1]] == [0]
    with session_scope(factory) as session:
        hub.record_pull(session, name="acme/tool5", at=datetime.now(UTC))
        hub.record_pull(session, name="acme/vaultkeeper", at=datetime.now(UTC))
    with session_scope(factory) as session:
        product = session.scalars(select(Product).where(Product.slug == "vaultkeeper")).one()
        product.summary = "Secrets in basalt"
    with session_scope(factory) as session:
        make_repo(session, "acme/obsidian", description="volcanic glass")
    with read_only_session(factory) as reader:
        tool = service.search(reader, q="acme/tool5").hits[0].doc
        listing = service.search(reader, q="basalt").hits
        fresh = [h.doc.name for h in service.search(reader, q="volcanic").hits]
    assert (tool.name, tool.pull_count) == ("acme/tool5", 1)
    assert [(h.doc.name, h.doc.pull_count) for h in listing] == [("acme/vaultkeeper", 1)]
    assert fresh == ["acme/obsidian"]


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_a_reindex_of_committed_rows_builds_them_on_other_connections(
    engine: Engine, workers: int
) -> None:
    """``store search reindex`` (nothing of the sources written in its transaction): the
    worker processes read and build the documents on connections of their own, the
    reindexing connection only lists the ids and writes, and the index they make is the
    one this process makes, value for value."""
    with engine.connect() as conn:
        before = stored_index(conn)
    assert len(before["documents"]) == 32
    reads: list[str] = []

    def count_reads(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM hub_repositories" in statement or "FROM products" in statement:
            reads.append(statement)

    with engine.begin() as conn:
        event.listen(conn, "before_cursor_execute", count_reads)
        conn.execute(text("DELETE FROM search_documents"))
        counts = indexer.reindex(conn, workers=workers, committed=True)
        event.remove(conn, "before_cursor_execute", count_reads)
        assert counts == {"store": 2, "hub": 30, "changed": 32}
        assert stored_index(conn) == before
    with engine.connect() as conn:
        assert stored_index(conn) == before
    # The two id lists, then (built in this process only) the documents' rows.
    assert (len(reads) == 2) == bool(workers), reads
