"""A full reindex beside live traffic, on SQLite and PostgreSQL (committed transactions on a
database of their own): searches keep answering from the old index while it runs, changes
committed meanwhile are not lost, and every change is visible to other connections' searches
as soon as it commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.catalog.models import Product
from store.db import make_engine, make_sessionmaker, read_only_session, session_scope, utcnow
from store.registry import hub
from store.registry.models import HubRepository
from store.search import indexer, postgres_fts, service, sqlite_fts
from store.search.documents import read_documents
from store.search.models import SearchDocument
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
    engine: Engine, monkeypatch: pytest.MonkeyPatch, where: str = "swap"
) -> tuple[threading.Thread, threading.Event, threading.Event, list[BaseException]]:
    """A full reindex (``store search reindex``) in a thread, paused in the middle. On
    PostgreSQL (its transaction open) when the new tables are filled and indexed, before
    the catch-up and the swap. On SQLite between two of its transactions: before the swap
    (``where`` "swap"), after the first batch of new tables' rows ("fill") or after the
    first batch of documents ("documents")."""
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

        def counted_copy(conn: Any, docs: Any, *args: Any) -> None:
            if caught_up:
                caught_up[0] += len(docs)
            copy(conn, docs, *args)

        monkeypatch.setattr(postgres_fts, "_catch_up", pause_then_catch_up)
        monkeypatch.setattr(postgres_fts, "_copy", counted_copy)
    else:
        step = indexer._step
        names = {"swap": "swap", "fill": "fill", "documents": "write_chunk"}

        def paused_step(engine: Engine, fn: Callable[..., Any], *args: Any) -> Any:
            if fn.__name__ == names[where] and where == "swap":
                pause()
            result = step(engine, fn, *args)
            if fn.__name__ == names[where] and not paused.is_set():
                pause()  # after the first such step committed
            return result

        monkeypatch.setattr(indexer, "_step", paused_step)

    def run() -> None:
        try:
            indexer.full_reindex(engine, batch=10, fill_batch=10)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            paused.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert paused.wait(WAIT_S), "the reindex never reached its pause"
    return thread, paused, resume, errors


def _fts_in_step(engine: Engine) -> None:
    """SQLite: the FTS5 indexes hold exactly search_documents' text (FTS5's own check
    against the content table) and the facet table one row per document."""
    with engine.connect() as conn:
        for table in ("search_fts", "search_fts_head"):
            check = f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)"  # noqa: S608
            conn.execute(text(check))
        assert (
            conn.execute(text("SELECT id, tokens FROM search_fts_facets ORDER BY id")).all()
            == conn.execute(text("SELECT id, fts_facets FROM search_documents ORDER BY id")).all()
        )
        leftovers = conn.scalars(
            text(
                "SELECT name FROM sqlite_master WHERE name LIKE 'search_fts%\\_next%' ESCAPE '\\' "
                "OR name LIKE 'search_fts%\\_old%' ESCAPE '\\' OR name = 'search_fts_build'"
            )
        ).all()
        assert leftovers == []
        triggers = conn.scalars(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'search%'")
        ).all()
        assert len(triggers) == 3 and not any("search_fts_build" in t for t in triggers)


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


@pytest.mark.parametrize("where", ["swap", "fill", "documents"])
@pytest.mark.parametrize("change", ["edit", "pull", "delete"])
def test_changes_committed_during_a_reindex_are_kept(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, change: str, where: str
) -> None:
    """A writer commits while a full reindex runs (on SQLite between two of its
    transactions: it waits for one batch at most) and its change is in the index the
    reindex leaves."""
    sqlite = engine.dialect.name == "sqlite"
    if not sqlite and where != "swap":
        pytest.skip("PostgreSQL's reindex is one transaction: paused before its catch-up")
    factory = make_sessionmaker(engine)
    thread, _paused, resume, errors = _paused_reindex(engine, monkeypatch, where)
    try:
        assert not errors
        started = time.monotonic()
        with session_scope(factory) as session:
            if change == "edit":
                product = session.scalars(select(Product).where(Product.slug == "logpipe")).one()
                product.summary = "Shipping logs to zircon"
            elif change == "pull":
                hub.record_pull(session, name="acme/tool7", at=datetime.now(UTC))
            else:
                session.execute(delete(HubRepository).where(HubRepository.name == "acme/tool3"))
        waited = time.monotonic() - started
        if sqlite:
            # Found at once by a search of the live index, the build still paused.
            with read_only_session(factory) as session:
                seen = [h.doc.name for h in service.search(session, q="quartz", per_page=100).hits]
            assert ("acme/tool3" in seen) == (change != "delete")
            assert len(seen) == (29 if change == "delete" else 30)
    finally:
        resume.set()
        thread.join(WAIT_S)
    assert not errors
    assert waited < WAIT_S / 2
    if not sqlite:
        # Only what the change rewrote (a listing's document, a repository's and its
        # listing's, or nothing for a deletion) is written again.
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
    if sqlite:
        _fts_in_step(engine)
        return
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
        # Ids only (the lists, which of a batch's rows still exist, the documents of rows
        # that are gone) are read here; the documents' rows are not.
        ids_only = statement.startswith(
            ("SELECT products.id \n", "SELECT hub_repositories.id \n", "SELECT search_documents.id")
        )
        if ("FROM hub_repositories" in statement or "FROM products" in statement) and not ids_only:
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
    # The documents' rows are read in this process only when it builds them.
    assert (len(reads) == 0) == bool(workers), reads


def test_a_reindex_keeps_documents_written_after_it_read_them(engine: Engine) -> None:
    """Documents read (by a full reindex's worker) before another transaction rewrote or
    deleted their rows are not written over what that transaction left: a document
    written since is built again from the rows as they are now (here a pull, which
    rewrote only the pull columns of a document whose text is out of date), a deleted one
    is not made again."""
    factory = make_sessionmaker(engine)
    with read_only_session(factory) as session:
        repos = dict(
            session.execute(
                select(HubRepository.name, HubRepository.id).where(
                    HubRepository.name.in_(["acme/tool3", "acme/tool7"])
                )
            ).all()
        )
    url = engine.url.render_as_string(hide_password=False)
    began = utcnow()
    read = read_documents(url, "hub", began, list(repos.values()))
    with engine.begin() as conn:
        conn.execute(text("UPDATE search_documents SET fts_body = 'stale' WHERE source = 'hub'"))
        conn.execute(delete(SearchDocument).where(SearchDocument.ref_id == repos["acme/tool3"]))
    with session_scope(factory) as session:
        hub.record_pull(session, name="acme/tool7", at=datetime.now(UTC))
        session.execute(delete(HubRepository).where(HubRepository.name == "acme/tool3"))
    with engine.begin() as conn:
        assert indexer.write(conn, "hub", repos.values(), read, since=began) == 1
    with read_only_session(factory) as session:
        docs = {d.name: d for d in session.scalars(select(SearchDocument))}
    assert "acme/tool3" not in docs
    assert docs["acme/tool7"].pull_count == 1
    assert docs["acme/tool7"].fts_body != "stale"


def test_a_full_reindex_of_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """No products, no repositories: the reindex writes nothing and leaves an empty index
    that answers (and, on SQLite, nothing of its build behind)."""
    for backend in ("sqlite", "postgresql"):
        if backend == "postgresql" and not PG_URL:
            continue
        with (
            scratch_database("reindex_nothing")
            if backend == "postgresql"
            else _nullcontext(f"sqlite:///{tmp_path / 'empty.db'}")
        ) as url:
            engine = make_engine(url)
            try:
                migrate.upgrade(engine)
                for _ in range(2):
                    counts = indexer.full_reindex(engine)
                    assert counts == {"store": 0, "hub": 0, "changed": 0}
                assert _names(make_sessionmaker(engine), "quartz") == []
                if backend == "sqlite":
                    _fts_in_step(engine)
            finally:
                engine.dispose()


@contextmanager
def _nullcontext(value: str) -> Iterator[str]:
    yield value


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker-process"])
def test_a_full_reindex_from_nothing_stores_what_the_listeners_stored(
    engine: Engine, workers: int
) -> None:
    """``store search reindex`` of an empty index (twice: the second over the tables the
    first swapped in) stores the documents and full-text rows the listeners stored, value
    for value, and answers the same searches."""
    factory = make_sessionmaker(engine)
    with engine.connect() as conn:
        before = stored_index(conn)
    found = [_names(factory, q) for q in ("quartz", "vault", "qua", "acme")]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM search_documents"))
    assert _names(factory, "quartz") == []
    for _ in range(2):
        counts = indexer.full_reindex(engine, batch=7, fill_batch=5, workers=workers)
        with engine.connect() as conn:
            assert stored_index(conn) == before
        assert [_names(factory, q) for q in ("quartz", "vault", "qua", "acme")] == found
        if engine.dialect.name == "sqlite":
            _fts_in_step(engine)
    assert counts == {"store": 2, "hub": 30, "changed": 0}


@pytest.mark.parametrize("then", ["full_reindex", "reindex"])
def test_a_build_that_stops_part_way_leaves_the_live_index(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """SQLite: a full reindex (here from an empty index) that fails after filling some of
    its new tables leaves the live index as it was, answering and kept in step by writers
    (the documents the reindex inserted are not in it: a writer's change of one puts it
    there, a deletion of one is fine), and the next reindex, in transactions of its own or
    in the caller's, drops what the failed one left and leaves a whole index."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's build in transactions of its own")
    factory = make_sessionmaker(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM search_documents"))
    fill = sqlite_fts.fill
    calls: list[int] = []

    def failing_fill(conn: Any, batch: int) -> bool:
        calls.append(batch)
        if len(calls) == 3:
            raise RuntimeError("stopped")
        return fill(conn, batch)

    monkeypatch.setattr(sqlite_fts, "fill", failing_fill)
    with pytest.raises(RuntimeError, match="stopped"):
        indexer.full_reindex(engine, fill_batch=5)
    monkeypatch.setattr(sqlite_fts, "fill", fill)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM search_documents")) == 32
        assert conn.scalar(text("SELECT count(*) FROM search_fts_facets_next")) == 10
    assert _names(factory, "quartz") == []
    with session_scope(factory) as session:
        make_repo(session, "acme/obsidian", description="quartz glass")
        tool5 = session.scalars(select(HubRepository).where(HubRepository.name == "acme/tool5"))
        tool5.one().description = "quartz tool number five"
        session.execute(delete(HubRepository).where(HubRepository.name == "acme/tool3"))
    assert sorted(_names(factory, "quartz")) == ["acme/obsidian", "acme/tool5"]
    with engine.connect() as conn:
        for table in ("search_fts", "search_fts_head"):
            conn.execute(text(f"INSERT INTO {table}({table}) VALUES ('integrity-check')"))  # noqa: S608
    if then == "full_reindex":
        indexer.full_reindex(engine, fill_batch=5)
    else:
        with engine.begin() as conn:
            indexer.reindex(conn)
    quartz = _names(factory, "quartz")
    assert len(quartz) == 30 and "acme/obsidian" in quartz and "acme/tool3" not in quartz
    _fts_in_step(engine)


def test_documents_a_build_inserts_are_searchable_once_swapped(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: a full reindex from an empty index does not index the documents it inserts
    in the live tables (the swap replaces them): searches during the build answer from the
    index as it was, and a writer's change of one of those documents meanwhile is in the
    index swapped in."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's build in transactions of its own")
    factory = make_sessionmaker(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM search_documents"))
    thread, _paused, resume, errors = _paused_reindex(engine, monkeypatch, "fill")
    try:
        assert not errors
        assert _names(factory, "quartz") == []
        with session_scope(factory) as session:
            product = session.scalars(select(Product).where(Product.slug == "logpipe")).one()
            product.summary = "Shipping logs to zircon"
        assert _names(factory, "zircon") == ["acme/logpipe"]
    finally:
        resume.set()
        thread.join(WAIT_S)
    assert not errors
    assert len(_names(factory, "quartz")) == 30
    assert _names(factory, "zircon") == ["acme/logpipe"]
    _fts_in_step(engine)


def test_store_search_reindex_builds_beside(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`store search reindex` (SQLite, its default database) runs the reindex in
    transactions of its own: new full-text tables swapped in, nothing left behind."""
    import os

    from store.cli.main import main

    for name in list(os.environ):
        if name.startswith("STORE_") and name != "STORE_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("STORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORE_ENVIRONMENT", "test")
    monkeypatch.chdir(tmp_path)
    swaps: list[int] = []
    swap = sqlite_fts.swap

    def counted_swap(conn: Any) -> int:
        swaps.append(1)
        return swap(conn)

    monkeypatch.setattr(sqlite_fts, "swap", counted_swap)
    assert main(["search", "reindex", "--json"]) == 0
    assert '"changed": 0' in capsys.readouterr().out
    assert swaps == [1]
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'store.db'}")
    try:
        _fts_in_step(engine)
    finally:
        engine.dispose()
