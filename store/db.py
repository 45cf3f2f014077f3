"""Engine, sessions and the declarative base shared by every domain's models."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    MetaData,
    String,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, sessionmaker
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every dialect (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use timezone-aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class StringList(TypeDecorator[list[str]]):
    """A list of strings kept as JSON."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: list[str] | None, dialect: Dialect) -> Any:
        return list(value) if value is not None else []

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str]:
        return list(value or [])


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, str: String}


# --- row locks -----------------------------------------------------------------------------
#
# PostgreSQL runs at READ COMMITTED: a statement sees what others committed before it began,
# and nothing stops two transactions from reading the same row and acting on what they read.
# Where a rule spans statements (an organization keeps an owner, a credential dies with its
# source, one customer per account), the transactions concerned take a lock of one row
# first, and each waits for the other's commit. SQLite lets one transaction write at a time
# (store.db, "transactions"), so there the lock is a no-op and the rule holds already.
#
# The modes, strongest first:
# - ``update`` (FOR UPDATE): one holder at a time; for transactions that serialise among
#   themselves on the row (checkouts of one holder, owners counted) or will change it.
# - ``no_key_update`` (FOR NO KEY UPDATE): as ``update``, but rows inserted with a foreign
#   key to this one (which take KEY SHARE on it) do not wait for it.
# - ``share`` (FOR SHARE): many holders at once, none while another transaction updates the
#   row; a credential made from a source holds it, and the source's revocation (an UPDATE of
#   the row) waits for that credential to commit, or the maker waits and sees it revoked.
# - ``key_share`` (FOR KEY SHARE): only keeps the row and its key (what a foreign key
#   check takes); every update but one of the key goes on beside it.

LockMode = Literal["update", "no_key_update", "share", "key_share"]
# (read, key_share) as SQLAlchemy's with_for_update spells them.
_LOCK_MODES: dict[str, tuple[bool, bool]] = {
    "update": (False, False),
    "no_key_update": (False, True),
    "share": (True, False),
    "key_share": (True, True),
}
M = TypeVar("M", bound=Base)


def lock_row(
    session: Session,
    model: type[M],
    row_id: Any,
    *,
    mode: LockMode = "update",
    populate: bool = True,
) -> M | None:
    """The row of ``model`` with primary key ``row_id``, locked in ``mode`` until the
    transaction ends (PostgreSQL; a no-op on SQLite, see above); None if there is none.

    ``populate``: the object in the session, if loaded already, is refreshed from the row
    as read under the lock (what a transaction that waited sees committed); without it
    the session's object is returned as it is (callers that only wait for their turn)."""
    (key,) = inspect(model).primary_key
    read, key_share = _LOCK_MODES[mode]
    # OF the model's table: a model loaded with joined relationships is read through outer
    # joins, and PostgreSQL refuses to lock the nullable side of one.
    stmt = (
        select(model).where(key == row_id).with_for_update(read=read, key_share=key_share, of=model)
    )
    if populate:
        stmt = stmt.execution_options(populate_existing=True)
    return session.scalar(stmt)


# --- transactions --------------------------------------------------------------------------
#
# SQLite allows one writer at a time. A deferred transaction (plain ``BEGIN``) that reads and
# then writes fails at once with "database is locked" when another connection committed in
# between (its WAL snapshot is stale; busy_timeout does not retry that). So on SQLite every
# transaction that may write takes the write lock up front (``BEGIN IMMEDIATE``) and waits
# its turn: first behind the other writers of this process (a lock that wakes the next one
# as soon as the holder ends, instead of SQLite's sleep-and-poll), then behind other
# processes (busy_timeout). Transactions that only read (``read_only_session``, the GET and
# HEAD requests) begin deferred and never wait (WAL). They are refused any write on every
# database, so a read-only unit of work that writes fails at once in tests instead of now
# and then in production.
#
# A request's unit of work runs in several hops of the thread pool (dependencies, the
# route, the commit). Were writers to wait for the lock inside pool threads, enough of them
# would fill the pool and the writer holding the lock could not get a thread to finish:
# so work started from the event loop waits for its turn there (``WriteTurns``), holding
# no thread, and only then enters the pool.

READ_ONLY = "store_read_only"  # an execution option: this transaction only reads
WRITE_WAIT_S = 30.0  # how long a writer queues for the SQLite write lock before giving up


class DatabaseBusy(Exception):
    """A writer waited ``WRITE_WAIT_S`` for the SQLite write lock (HTTP 503, try again)."""


class ReadOnlyTransaction(Exception):
    """A write in a unit of work declared read-only: a programming error."""


class _WriteGate:
    """The writers of one process on one SQLite database, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def enter(self, record_info: dict[str, Any]) -> None:
        if not self._lock.acquire(timeout=WRITE_WAIT_S):
            raise DatabaseBusy(f"no turn to write within {WRITE_WAIT_S:.0f} s")
        record_info[_HOLDS_GATE] = True

    def leave(self, record_info: dict[str, Any]) -> None:
        if record_info.pop(_HOLDS_GATE, False):
            self._lock.release()


class WriteTurns:
    """One writer at a time per process, waited for on the event loop (SQLite only; on
    PostgreSQL every turn is granted at once)."""

    def __init__(self, engine: Engine) -> None:
        self.enabled = engine.dialect.name == "sqlite"
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        # No timeout here: a turn ends when its unit of work does, and that one's waits on
        # the database are bounded (WRITE_WAIT_S, busy_timeout).
        async with lock:
            yield

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run a unit of work that writes in the thread pool, in this process's turn."""
        async with self.turn():
            return await run_in_threadpool(func, *args)


_HOLDS_GATE = "store_holds_write_gate"
_QUERY_ONLY = "store_query_only"


def _sqlite_transactions(engine: Engine) -> None:
    gate = _WriteGate()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        info = conn.connection.info
        if conn.get_execution_options().get(READ_ONLY):
            if not info.get(_QUERY_ONLY):
                conn.exec_driver_sql("PRAGMA query_only=1")
                info[_QUERY_ONLY] = True
            conn.exec_driver_sql("BEGIN")
            return
        if info.pop(_QUERY_ONLY, False):
            conn.exec_driver_sql("PRAGMA query_only=0")
        gate.enter(info)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            gate.leave(info)
            raise

    # The transaction's end lets the next writer of this process in (its BEGIN IMMEDIATE
    # then waits the moment the COMMIT takes, through busy_timeout); a connection returned
    # to the pool without either (an error in between) lets it in too.
    @event.listens_for(engine, "commit")
    def _commit(conn: Connection) -> None:
        gate.leave(conn.connection.info)

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        gate.leave(conn.connection.info)

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            gate.leave(record.info)


@event.listens_for(Session, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.execution_options.get(READ_ONLY) and (
        session.new or session.deleted or any(session.is_modified(o) for o in session.dirty)
    ):
        raise ReadOnlyTransaction("a read-only unit of work tried to write")


@event.listens_for(Session, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.session.execution_options.get(READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise ReadOnlyTransaction("a read-only unit of work tried to write")


def _owner_only_sqlite_files(url: str) -> None:
    """The database file and its -wal/-shm (which SQLite creates with the database file's
    mode) readable by their owner only, from the moment they exist."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.exists() and path.parent.is_dir():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        _owner_only_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so
            # that SAVEPOINT and transactional DDL work (SQLAlchemy's documented recipe).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(WRITE_WAIT_S * 1000)}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Search (FTS5 doclists, rank-ordered walks) reads many pages per query: a
            # 32 MiB page cache per connection (grows only as used; the default is 2 MiB)
            # and reads through a 256 MiB memory map instead of a read() per page.
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.execute("PRAGMA mmap_size=268435456")
            cursor.close()

        _sqlite_transactions(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


def read_only_session(factory: sessionmaker[Session]) -> Session:
    """A session for a unit of work that only reads: on SQLite it never waits for writers,
    and on every database it is refused any write (``ReadOnlyTransaction``)."""
    return factory(execution_options={READ_ONLY: True})


def read_only_connection(engine: Engine) -> Connection:
    """A Core connection that only reads (``with read_only_connection(engine) as conn``)."""
    return engine.connect().execution_options(**{READ_ONLY: True})


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work for CLI commands and background jobs: commit or roll back."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
