"""Two writers of one search document never lose a change (PostgreSQL, READ COMMITTED).

A document's key is its rank key (badges, popularity): it moves when a writer changes
either. Writer A moves the document while writer B, which read it before the move, writes
it: B's change is still there once both commit (a repository made private is not found by
an anonymous search; a pull count reaches its document), the stored index is what a
reindex would build from the committed rows (documents and full-text rows alike), and
nothing raised.

Writers: the listeners (an organization verified: the ``verified`` badge moves its
repositories' documents; a repository made private) and the pull refresh
(:func:`indexer.refresh_pulls` after pulls were counted: popularity moves the document).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, select, text, update
from sqlalchemy.orm import Session

from store import migrate
from store.accounts.models import Organization
from store.db import make_engine, make_sessionmaker, read_only_session, session_scope, utcnow
from store.registry import hub
from store.registry.models import HubRepository
from store.search import indexer, service
from store.search.models import SearchDocument
from tests.factories import make_account, make_org
from tests.pg import PG_URL, scratch_database
from tests.search.helpers import make_repo, stored_index

WAIT_S = 20.0
NAME = "acme/quartz"


def pg_engine(label: str) -> Iterator[Engine]:
    """A scratch PostgreSQL database of its own with the organization acme (skips without
    PostgreSQL)."""
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database(label) as url:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            with session_scope(make_sessionmaker(engine)) as session:
                owner = make_account(session, "owner")
                make_org(session, owner, "acme")
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def engine() -> Iterator[Engine]:
    for engine in pg_engine("docrace"):
        with session_scope(make_sessionmaker(engine)) as session:
            make_repo(session, NAME, description="quartz crystal", pull_count=10)
        yield engine


def _repo(session: Session) -> HubRepository:
    return session.scalars(select(HubRepository).where(HubRepository.name == NAME)).one()


def _count_pulls(engine: Engine, pulls: int) -> None:
    """Pulls counted and committed (as hub.count_pull does, without the search refresh)."""
    with engine.begin() as conn:
        conn.execute(
            update(HubRepository)
            .where(HubRepository.name == NAME)
            .values(pull_count=HubRepository.pull_count + pulls)
        )


def _verify(session: Session) -> None:
    """Listener: the organization verified; its repositories' documents move (badge)."""
    org = session.scalars(select(Organization).where(Organization.slug == "acme")).one()
    org.verified_at = utcnow()
    session.flush()


def _private(session: Session) -> None:
    """Listener: the repository made private."""
    repo = _repo(session)
    repo.private, repo.visibility = True, "private"
    session.flush()


def _stars(session: Session) -> None:
    """Listener: the repository starred (its row and its document's star count)."""
    _repo(session).star_count += 5
    session.flush()


def _pulls(session: Session) -> None:
    """The pull refresh: popularity (hence the key) moves with the pulls counted."""
    hub.refresh_search(session, [_repo(session).id])


WRITERS: dict[str, Callable[[Session], None]] = {
    "verify": _verify,
    "private": _private,
    "pulls": _pulls,
    "stars": _stars,
}


def _pid(session: Session) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _wait_blocked(engine: Engine, pid: int, by: int, alive: Callable[[], bool]) -> bool:
    """Whether backend ``pid`` comes to wait on ``by`` (False: ``alive()`` ended first)."""
    deadline = time.monotonic() + WAIT_S
    with engine.connect() as probe:
        while True:
            blockers = probe.execute(text("SELECT pg_blocking_pids(:p)"), {"p": pid}).scalar_one()
            probe.rollback()
            if by in blockers:
                return True
            if not alive():
                return False
            assert time.monotonic() < deadline, "neither waited nor finished"
            time.sleep(0.01)  # polling for the wait, not ordering anything


class Writer(threading.Thread):
    """One writer's transaction on a thread of its own; its backend pid once known."""

    def __init__(self, engine: Engine, work: Callable[[Session], None]) -> None:
        super().__init__(daemon=True)
        self.factory = make_sessionmaker(engine)
        self.work = work
        self.pid: int | None = None
        self.started_ = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with session_scope(self.factory) as session:
                self.pid = _pid(session)
                self.started_.set()
                self.work(session)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
        finally:
            self.started_.set()


def race(
    engine: Engine,
    first: Callable[[Session], None],
    second: Callable[[Session], None],
    *,
    between: Callable[[], None] = lambda: None,
) -> None:
    """``first`` written and held uncommitted (then ``between``); ``second``, on a thread of
    its own, comes to wait for it (pg_blocking_pids); then ``first`` commits and ``second``
    must end without an error. (A transaction's documents are written before it commits:
    ``first``'s now, and ``second`` waits at its commit.)"""
    with session_scope(make_sessionmaker(engine)) as session:
        first(session)
        indexer.write_pending(session)
        mine = _pid(session)
        between()
        other = Writer(engine, second)
        other.start()
        try:
            assert other.started_.wait(WAIT_S) and other.pid is not None
            assert _wait_blocked(engine, other.pid, mine, other.is_alive), (
                "the second writer never waited for the first"
            )
        except BaseException:
            session.rollback()
            other.join(WAIT_S)
            raise
    other.join(WAIT_S)
    assert not other.is_alive()
    assert not other.errors, other.errors


def _assert_kept(engine: Engine, a: str, b: str) -> None:
    """Both changes kept, and the index is what a reindex builds from the rows."""
    with read_only_session(make_sessionmaker(engine)) as session:
        found = [h.doc.name for h in service.search(session, q="quartz", per_page=10).hits]
    assert found == ([] if "private" in (a, b) else [NAME])
    with engine.connect() as conn:
        doc = conn.execute(select(SearchDocument).where(SearchDocument.name == NAME)).one()
        pulls = conn.scalar(select(HubRepository.pull_count).where(HubRepository.name == NAME))
        assert doc.pull_count == pulls
        stars = conn.scalar(select(HubRepository.star_count).where(HubRepository.name == NAME))
        assert doc.star_count == stars == (5 if "stars" in (a, b) else 0)
        assert doc.verified == ("verify" in (a, b))
        assert doc.status == ("private" if "private" in (a, b) else "public")
    assert_rebuilt(engine)


def assert_rebuilt(engine: Engine) -> None:
    """The stored index is what a reindex builds from the committed rows."""
    with engine.connect() as conn:
        stored = stored_index(conn)
    with engine.connect() as conn, conn.begin() as tx:
        indexer.reindex(conn)
        rebuilt = stored_index(conn)
        tx.rollback()
    assert stored == rebuilt


def _prepare(engine: Engine, writer: str) -> None:
    if writer == "pulls":
        _count_pulls(engine, 1000)


PAIRS = [
    ("verify", "pulls"),  # listener moves, pull refresh writes
    ("pulls", "private"),  # pull refresh moves, listener writes
    ("pulls", "pulls"),  # two processes' pull refreshes
    ("verify", "private"),  # listener moves, listener writes
    ("stars", "pulls"),  # the listener holds the repository's row too: pulls counted first
]


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_a_writer_waiting_on_a_move_keeps_its_change(engine: Engine, a: str, b: str) -> None:
    """A has moved the document and not committed; B reads it and writes: B waits for A
    (pg_blocking_pids), A commits, and B's change is on the moved document."""
    _prepare(engine, a)
    if a == "stars":
        _prepare(engine, b)
    between = (lambda: None) if a == "stars" else (lambda: _prepare(engine, b))
    race(engine, WRITERS[a], WRITERS[b], between=between)
    _assert_kept(engine, a, b)


HOOKED = [("pulls", "private"), ("verify", "private")]


@pytest.mark.parametrize(("a", "b"), HOOKED, ids=[f"{a}-between-{b}" for a, b in HOOKED])
def test_a_move_committed_between_a_read_and_its_update_is_seen(
    engine: Engine, a: str, b: str
) -> None:
    """B has read the document and is about to update it when A moves it (A commits, or
    waits for B if B holds the document): B's change is kept either way.

    (A pull refresh as B has nothing to lose here: A, later, writes the counts B read.)"""
    _prepare(engine, a)  # committed before B locks the repository's row
    factory = make_sessionmaker(engine)
    mover: list[Writer] = []

    def before(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if mover or not statement.lstrip().upper().startswith("UPDATE SEARCH_DOCUMENTS"):
            return
        mover.append(Writer(engine, WRITERS[a]))
        mover[0].start()
        assert mover[0].started_.wait(WAIT_S) and mover[0].pid is not None
        mine = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        # A commits, or waits for this transaction (which then goes on to commit).
        if not _wait_blocked(engine, mover[0].pid, mine, mover[0].is_alive):
            mover[0].join(WAIT_S)

    with session_scope(factory) as session:
        conn = session.connection()
        event.listen(conn, "before_cursor_execute", before)
        try:
            WRITERS[b](session)
            indexer.write_pending(session)  # as its commit would
        finally:
            event.remove(conn, "before_cursor_execute", before)
    assert mover
    mover[0].join(WAIT_S)
    assert not mover[0].is_alive() and not mover[0].errors
    _assert_kept(engine, a, b)
