# ruff: noqa: S608, S105  (SQL assembled from constant fragments, see below; no passwords)
"""The token endpoint's database reads: one round trip per token request, never a pooled
connection held across an ``await``.

Every /token request needs the credential (an access token by its hash, or an account by
name) and the facts about the requested repository (namespace membership, product, tiers,
entitlement: :class:`store.registry.grants.RepoFacts`). Both come from **one** SQL statement:
the credential is a derived table ``c`` and the facts are correlated subqueries on it, so a
PostgreSQL token costs one network round trip. Principals resolved another way (anonymous,
license keys, the sync credential) and further repositories of a multi-scope request use the
facts-only statement.

The statements are plain SQL run through the database driver (no SQLAlchemy execution: the
performance floor shows it costs ≈ 145 µs per request more than the driver for two lookups).
Where they run (:func:`open_db`):

- **SQLite file** (the embedded default): a raw ``sqlite3`` connection per thread in
  ``query_only`` mode, executed synchronously on the event loop. In WAL mode readers never
  wait for writers, and an indexed read costs ≈ 15 µs: cheaper than any hand-off.
- **PostgreSQL (psycopg)**: a small pool of psycopg ``AsyncConnection`` in autocommit per
  event loop (per worker). The query is awaited, so the loop serves other requests during
  the round trip; statements are prepared by psycopg after a few executions. A connection
  that fails is dropped and the query retried once on a new one (database restart).
- **Anything else, and tests** (the app bound to one SQLAlchemy ``Connection`` inside a
  rolled-back transaction): the same SQL through ``Connection.exec_driver_sql``, checking a
  connection out of the engine only for the duration of the statement.

**Cached per process** (:class:`CredentialCache`): a credential row found is kept with the
decision generation read in the same statement (a counter that triggers on every column
these statements read bump: migration 0750) and the earliest instant its answers could
change by time alone. Asked again, it is answered after one read of the counter by primary
key (on PostgreSQL one round trip shared by the requests that arrived before it was sent)
instead of the statement, as long as the counter is unchanged and that instant has not
come. So a revocation, a refund, a membership removed, a repository made private or an
account disabled by any process is seen at the next request of every process.

Values are encoded per dialect: SQLite keeps UUIDs as 32 hex digits and datetimes as naive
UTC ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy's ``Uuid`` and ``UTCDateTime`` write);
PostgreSQL gets native values.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from store.catalog.periods import BillingKind
from store.licensing.usable import USABLE_SQL
from store.registry.grants import Principal, RepoFacts, product_repository

log = logging.getLogger("store.registry.lookup")
LAST_USED_RESOLUTION = timedelta(minutes=1)
HORIZON_JITTER = 0.25  # a cached row's time bound is 45-60 s (lookup._horizon)
PG_POOL_SIZE = 8  # connections per worker process; each query holds one for one round trip

# --- SQL ---------------------------------------------------------------------------------


# The statements are assembled once, at import, from the constant fragments below (the only
# values interpolated are column references and placeholder names, never input).


FREE = BillingKind.FREE.value  # raw SQL below names the billing kind by its stored value


def _facts_columns(aid: str, oid: str | None) -> str:
    owner = _owner(aid, oid)
    return f"""
       o.id AS org_id,
       CASE WHEN nsp.kind = 'user' AND nsp.account_id = {aid} THEN 'owner'
            WHEN nsp.kind = 'user' THEN
              (SELECT rc.permission FROM repository_collaborators rc
                WHERE rc.repository_id = h.id AND rc.account_id = {aid})
            ELSE (SELECT m.role FROM memberships m
                   WHERE m.organization_id = o.id AND m.account_id = {aid})
       END AS role,
       CASE WHEN nsp.kind = 'user' THEN 1 ELSE 0 END AS personal,
       p.id AS product_id,
       p.status AS product_status,
       (SELECT min(CASE WHEN ti.billing <> '{FREE}' THEN -1 WHEN ti.public THEN 1 ELSE 0 END)
          FROM tiers ti WHERE ti.product_id = p.id AND ti.active) AS all_public,
       EXISTS (SELECT 1 FROM entitlements e
                WHERE e.product_id = p.id AND ({owner}) AND {USABLE_SQL}
       ) AS entitled,
       CASE WHEN h.visibility = 'public' THEN 1 ELSE 0 END AS marked_public"""


# The product a repository belongs to is the one whose repository is its first two path
# components (:func:`store.registry.grants.product_repository`): ``:product``. In a personal
# namespace the role is ``owner`` for its user and the collaborator's permission (read,
# write, admin) for the accounts given one on the repository.
_REPO_JOINS = """
LEFT JOIN namespaces nsp ON nsp.name = :ns
LEFT JOIN organizations o ON o.slug = :ns
LEFT JOIN products p ON p.repository = :product
LEFT JOIN hub_repositories h ON h.name = :repo"""

# An access token (personal, robot, refresh) by the SHA-256 of its secret. Robots act for
# their organization, everyone else for their account (the Principal of each kind).
_TOKEN_CREDENTIAL = """
SELECT tk.id AS cid, tk.kind AS ckind, tk.account_id AS caid, tk.organization_id AS coid,
       tk.scopes AS cscopes,
       CASE WHEN tk.revoked_at IS NULL THEN 0 ELSE 1 END AS crevoked,
       CASE WHEN tk.expires_at IS NOT NULL AND tk.expires_at <= :now THEN 1 ELSE 0 END
           AS cexpired,
       CASE WHEN tk.last_used_at IS NULL OR tk.last_used_at < :cutoff THEN 1 ELSE 0 END
           AS cstale,
       a.username AS cname, a.is_active AS cactive, a.is_admin AS cadmin, og.slug AS corg,
       tk.expires_at AS cexpires,
       CASE WHEN tk.kind = 'robot' THEN NULL ELSE tk.account_id END AS faid,
       CASE WHEN tk.kind = 'robot' THEN tk.organization_id ELSE NULL END AS foid
FROM access_tokens tk
LEFT JOIN accounts a ON a.id = tk.account_id
LEFT JOIN organizations og ON og.id = tk.organization_id
WHERE tk.token_hash = :hash"""

_ACCOUNT_CREDENTIAL = """
SELECT a.id AS cid, a.username AS cname, a.password_hash AS chash, a.is_active AS cactive,
       a.is_admin AS cadmin, a.id AS faid,
       CASE WHEN a.totp_enabled_at IS NULL THEN 0 ELSE 1 END AS c2fa
FROM accounts a
WHERE a.{column} = :login"""


def _with_credential(credential: str, *, robots: bool) -> str:
    # The credential drives the statement (no row: no such credential). As the left operand
    # of the joins SQLite flattens it into the statement; as the right operand of a LEFT
    # JOIN (from a constant row) a credential that is itself a join (token, owner,
    # organization) was materialized into a temporary table on every request: 49 against
    # 28 µs for the statement.
    aid, oid = "c.faid", "c.foid" if robots else None
    facts = _facts_columns(aid, oid)
    return (
        f"SELECT c.*, {facts},\n{_horizon_column(aid, oid)},\n{_GENERATION_COLUMN}"
        f"\nFROM ({credential}) AS c{_REPO_JOINS}"
    )


def _owner(aid: str, oid: str | None) -> str:
    owner = (
        f"e.account_id = {aid} OR e.organization_id IN "
        f"(SELECT m2.organization_id FROM memberships m2 WHERE m2.account_id = {aid})"
    )
    if oid is not None:
        owner = f"e.organization_id = {oid} OR {owner}"
    return owner


def _horizon_column(aid: str, oid: str | None) -> str:
    """The earliest instant after ``:now`` at which ``entitled`` could change by time alone:
    the next start, end or end of grace of an active entitlement the principal holds to
    the product (an instant earlier than the real change is only a cache miss more)."""
    return f"""       (SELECT min(CASE WHEN e.starts_at > :now THEN e.starts_at
                        WHEN e.ends_at > :now THEN e.ends_at
                        WHEN e.grace_until > :now THEN e.grace_until END)
          FROM entitlements e
         WHERE e.product_id = p.id AND ({_owner(aid, oid)}) AND e.status = 'active'
       ) AS horizon"""


# The decision generation (migration 0750) read in the same statement, so the value kept
# with a row is the one of the row's own snapshot.
GENERATION_TABLE = "registry_decision_generation"
_GENERATION_COLUMN = f"       (SELECT g.value FROM {GENERATION_TABLE} g WHERE g.id = 1) AS cgen"


STATEMENTS: dict[str, str] = {
    "token": _with_credential(_TOKEN_CREDENTIAL, robots=True),
    "username": _with_credential(_ACCOUNT_CREDENTIAL.format(column="username"), robots=False),
    "email": _with_credential(_ACCOUNT_CREDENTIAL.format(column="email"), robots=False),
    "facts": f"SELECT {_facts_columns(':aid', ':oid')}\nFROM (SELECT 1 AS one) AS one"
    + _REPO_JOINS,
    # The same with the horizon, for a principal that may hold entitlements (an account, a
    # robot's organization): a token granted through one lives no longer than it.
    "facts_held": f"SELECT {_facts_columns(':aid', ':oid')},\n"
    f"{_horizon_column(':aid', ':oid')}\nFROM (SELECT 1 AS one) AS one" + _REPO_JOINS,
    "generation": f"SELECT value FROM {GENERATION_TABLE} WHERE id = 1",
}
_PYFORMAT = {k: re.sub(r"(?<!:):(\w+)", r"%(\1)s", v) for k, v in STATEMENTS.items()}


# --- values per dialect --------------------------------------------------------------------

# SQLite's ids (hex text) already made into UUIDs: the same accounts, tokens and products come
# back request after request, and a dict lookup costs a tenth of parsing one again.
_UUIDS: dict[str, uuid.UUID] = {}
_UUIDS_MAX = 50_000


class _Codec:
    """Parameters in, values out, for one dialect."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.statements = STATEMENTS if self.sqlite else _PYFORMAT

    def time(self, value: datetime) -> Any:
        if self.sqlite:  # "YYYY-MM-DD HH:MM:SS.ffffff", naive UTC
            if value.tzinfo is UTC:  # utcnow(): the text before "+00:00"
                return value.isoformat(" ", "microseconds")[:26]
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    def id(self, value: uuid.UUID | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.hex

    @staticmethod
    def uuid(value: Any) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        known = _UUIDS.get(value)
        if known is None:
            if len(_UUIDS) >= _UUIDS_MAX:
                _UUIDS.clear()
            known = _UUIDS[value] = uuid.UUID(hex=value)
        return known

    def moment(self, value: Any) -> datetime:
        """A time the database returned, as an aware UTC datetime."""
        if isinstance(value, str):  # SQLite: naive UTC text
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @staticmethod
    def strings(value: Any) -> list[str]:
        if isinstance(value, (str, bytes)):
            value = orjson.loads(value)
        return list(value or [])


# --- executors -----------------------------------------------------------------------------


class TokenDB:
    """Runs the token endpoint's statements; see the module docstring for the variants."""

    name = "base"

    def __init__(self, dialect: str) -> None:
        self.codec = _Codec(dialect)
        self.cache = CredentialCache()

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    async def generation(self) -> int:
        """The decision generation as of a snapshot taken after this call began."""
        rows = await self.rows("generation", {})
        return int(rows[0]["value"])

    def close(self) -> None:
        pass


class SqliteDB(TokenDB):
    """A ``query_only`` sqlite3 connection per thread (the event loop's, in a server)."""

    name = "sqlite"

    def __init__(self, path: str) -> None:
        super().__init__("sqlite")
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._names: dict[str, list[str]] = {}

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
            conn.execute("PRAGMA busy_timeout=2000")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self._connection().execute(STATEMENTS[statement], params)
        names = self._names.get(statement)
        if names is None:  # cursor.description builds a tuple per column: read it once
            names = self._names[statement] = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def generation(self) -> int:
        row = self._connection().execute(STATEMENTS["generation"]).fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _LoopPool:
    """psycopg async connections of one event loop: at most ``size``, served first come,
    first served.

    A connection given back goes straight to the longest waiter, and a request arriving
    while others wait queues behind them: were it free for the taking, a newcomer could take
    it before the woken waiter ran, and a waiter sent to the back of the queue each time
    could wait for hundreds of requests (a p99 of 400 ms at 32 connections on two workers).
    A waiter is handed a connection, or ``None``: a slot freed by a discarded connection,
    already counted as its own, to open a new one in."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self.opened = 0
        self.idle: list[Any] = []
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.all: set[Any] = set()

    async def get(self) -> Any:
        if not self.waiters:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self._forget(conn)
            if self.opened < self.size:
                self.opened += 1
                return await self._open()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if not waiter.cancelled() and waiter.done():
                # Handed a connection or a slot and cancelled at once: pass it on.
                handed = waiter.result()
                if handed is None:
                    self.opened -= 1
                    self._wake()
                else:
                    self.put(handed)
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise
        if conn is None or conn.closed:
            if conn is not None:
                self.all.discard(conn)  # its slot passes to this waiter
            return await self._open()
        return conn

    async def _open(self) -> Any:
        """A new connection in a slot already counted in ``opened``."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except BaseException:
            self.opened -= 1
            self._wake()
            raise
        self.all.add(conn)
        return conn

    def put(self, conn: Any) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.idle.append(conn)

    def discard(self, conn: Any) -> None:
        _finish(conn)
        self._forget(conn)
        self._wake()

    def _forget(self, conn: Any) -> None:
        if conn in self.all:
            self.all.discard(conn)
            self.opened -= 1

    def _wake(self) -> None:
        """A slot is free: the longest waiter opens a connection in it."""
        while self.waiters and self.opened < self.size:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.opened += 1
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in list(self.all):
            _finish(conn)
        self.all.clear()
        self.idle.clear()
        self.opened = 0


def _finish(conn: Any) -> None:
    """Close a psycopg async connection without its event loop (closes the socket)."""
    try:
        conn.pgconn.finish()
    except Exception:  # already broken: nothing left to close
        log.debug("closing a token-path connection failed", exc_info=True)


class PostgresDB(TokenDB):
    """psycopg ``AsyncConnection`` pools in autocommit, one per event loop."""

    name = "postgresql"

    def __init__(self, conninfo: str, size: int = PG_POOL_SIZE) -> None:
        super().__init__("postgresql")
        self.conninfo = conninfo
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: _LoopPool | None = None
        self._names: dict[str, list[str]] = {}
        # The generation read not sent yet, which every request arriving now may wait for.
        self._open: asyncio.Future[int] | None = None
        self._reads: set[asyncio.Task[None]] = set()  # running reads (kept from the GC)

    def _current(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            if self._pool is not None:
                self._pool.close()  # a loop that is gone (tests run several in turn)
            self._loop, self._pool = loop, _LoopPool(self.conninfo, self.size)
        return self._pool

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cursor, rows = await self._fetch(_PYFORMAT[statement], params)
        names = self._names.get(statement)
        if names is None:  # cursor.description builds objects: read it once
            names = self._names[statement] = [d.name for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in rows]

    async def _fetch(
        self, sql: str, params: dict[str, Any] | None, sent: Callable[[], None] | None = None
    ) -> tuple[Any, list[Any]]:
        """The cursor and rows of ``sql`` on a pooled connection (``sent`` is called once
        one is held, as the statement goes out). A connection that died (database restart,
        network) is dropped and the statement sent once more on a new one."""
        import psycopg

        pool = self._current()
        for attempt in (1, 2):
            conn = await pool.get()
            if sent is not None:
                sent()
            try:
                cursor = await conn.execute(sql, params)
                rows = await cursor.fetchall()
            except psycopg.OperationalError:
                pool.discard(conn)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                pool.discard(conn)  # cancelled or failed mid-query: its state is unknown
                raise
            pool.put(conn)
            return cursor, rows
        raise AssertionError("unreachable")

    async def generation(self) -> int:
        """One read of the counter serves every request that arrived before it was sent:
        its snapshot is taken after each of them began, so a change committed before any
        of them arrived is in it. Requests arriving once it is sent wait for the next."""
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None or batch.get_loop() is not loop:
            batch = self._open = loop.create_future()
            task = loop.create_task(self._read_generation(batch))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)
        # shielded: one waiter cancelled (a client gone) does not cancel the others' read
        return await asyncio.shield(batch)

    async def _read_generation(self, batch: asyncio.Future[int]) -> None:
        def sent() -> None:
            if self._open is batch:
                self._open = None  # sent now: later arrivals need a later read

        try:
            _, rows = await self._fetch(_PYFORMAT["generation"], None, sent)
            batch.set_result(int(rows[0][0]))
        except BaseException as exc:
            if self._open is batch:
                self._open = None
            if not batch.done():
                batch.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
            self._loop = None


class ConnectionDB(TokenDB):
    """The statements through SQLAlchemy's driver connection: the app's shared test
    connection, or a connection checked out of an engine for one statement."""

    name = "sqlalchemy"

    def __init__(self, bind: Connection | Engine) -> None:
        super().__init__(bind.dialect.name)
        self.bind = bind

    def _run(self, conn: Connection, statement: str, params: dict[str, Any]) -> Any:
        return conn.exec_driver_sql(self.codec.statements[statement], params)

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(self.bind, Connection):
            result = self._run(self.bind, statement, params)
            return [dict(r._mapping) for r in result]
        with self.bind.connect() as conn:
            result = self._run(conn, statement, params)
            rows = [dict(r._mapping) for r in result]
            conn.commit()
        return rows


def open_db(bind: Any) -> TokenDB:
    """The executor for the app's database (``sessionmaker.kw['bind']``)."""
    if isinstance(bind, Engine):
        url = bind.url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return SqliteDB(url.database)
        if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            return PostgresDB(conninfo)
    if isinstance(bind, (Engine, Connection)):
        return ConnectionDB(bind)
    raise TypeError(f"cannot read the registry's facts through {bind!r}")


# --- what the token endpoint asks ----------------------------------------------------------


def _names(name: str) -> dict[str, str]:
    """The ``ns``, ``repo`` and ``product`` parameters of a repository name."""
    namespace, sep, _ = name.partition("/")
    return {"ns": namespace if sep else "", "repo": name, "product": product_repository(name)}


def repo_facts(name: str, row: dict[str, Any], codec: _Codec) -> RepoFacts:
    return RepoFacts(
        name=name,
        org_id=codec.uuid(row["org_id"]),
        role=row["role"],
        personal=row["personal"] == 1,
        product_id=codec.uuid(row["product_id"]),
        product_status=row["product_status"],
        # the least open active tier: 1 every one free and public, -1 one at least paid,
        # 0 otherwise (None: no active tier, so not public)
        product_public=row["all_public"] == 1,
        product_paid=row["all_public"] == -1,
        entitled=bool(row["entitled"]),
        marked_public=row["marked_public"] == 1,
        changes_at=codec.moment(horizon) if (horizon := row.get("horizon")) is not None else None,
    )


async def credential(
    db: TokenDB, statement: str, params: dict[str, Any], repository: str, now: datetime
) -> dict[str, Any]:
    """The credential row (``token``: ``hash``; ``username``/``email``: ``login``) joined
    with the facts of ``repository`` ("" for none) for the principal it stands for;
    ``{"cid": None}`` when there is no such credential.

    A row read before is answered from ``db.cache`` while the decision generation is the
    one read with it and ``now`` is before the row's horizon (:class:`CredentialCache`).
    A request that misses while the statement for the same key is already running (the
    requests in flight when an entry reaches its horizon) waits for it and then checks its
    row as a cached one, against a generation read sent after it arrived: one statement
    for the burst, not one each."""
    cache = db.cache
    key = (statement, *params.values(), repository)
    entry = cache.get(key, now)
    if entry is None:
        running = cache.loading(key)
        if running is not None:
            await asyncio.shield(running)  # never fails: set when the statement ends
            entry = cache.get(key, now)
    if entry is not None and await db.generation() == entry[0]:
        return entry[1]
    codec = db.codec
    values = {
        **params,
        "now": codec.time(now),
        "cutoff": codec.time(now - LAST_USED_RESOLUTION),
        **_names(repository),
    }
    if statement != "token":
        del values["cutoff"]
    with cache.load(key):
        rows = await db.rows(statement, values)
        if not rows:
            return NO_CREDENTIAL
        row = rows[0]
        cache.put(key, row, _horizon(row, now, codec))
    return row


def _horizon(row: dict[str, Any], now: datetime, codec: _Codec) -> datetime:
    """The earliest instant the row could read differently with no write to the database:
    the token's expiry, the next change of an entitlement by time, and at most
    ``LAST_USED_RESOLUTION`` on (``cstale``: when the token's use is written again).

    That last bound is shortened by a random quarter at most: rows read together (a
    worker's first requests, or the burst after their common horizon) would otherwise all
    reach it together again, every minute, and be read again at once."""
    until = now + LAST_USED_RESOLUTION * (1 - random.random() * HORIZON_JITTER)
    for value in (row.get("cexpires"), row.get("horizon")):
        if value is not None:
            moment = codec.moment(value)
            if moment < until:
                until = moment
    return until


class CredentialCache:
    """Credential rows (with the facts of the repository asked for) of this process, each
    with the decision generation of its snapshot and the instant it stops holding.

    The generation (migration 0750) is bumped by triggers on every column the statements
    read, so an entry whose generation is still the database's is what the statement
    would read now, but for time: ``until`` is the earliest instant any of its answers
    (token expiry, an entitlement's start, end or grace) could change with no write at all.
    Only rows found are kept (no such credential is always asked again); what the caller
    decides from a row (revoked, expired, disabled, a password check, the grant) is decided
    again on every request."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: dict[tuple[Any, ...], tuple[int, dict[str, Any], datetime]] = {}
        # The statements running now, by key: done (never failed) when each ends.
        self._loading: dict[tuple[Any, ...], asyncio.Future[None]] = {}

    def loading(self, key: tuple[Any, ...]) -> asyncio.Future[None] | None:
        """The statement for ``key`` running in this event loop, if any."""
        running = self._loading.get(key)
        if running is None or running.get_loop() is not asyncio.get_running_loop():
            return None
        return running

    @contextlib.contextmanager
    def load(self, key: tuple[Any, ...]) -> Iterator[None]:
        """While the statement for ``key`` runs: the requests missing the same key wait
        for it (:meth:`loading`), and are let go however it ends (a failure, a client
        gone), to read for themselves when it left nothing."""
        if self.loading(key) is not None:  # another one already runs: theirs is theirs
            yield
            return
        running = self._loading[key] = asyncio.get_running_loop().create_future()
        try:
            yield
        finally:
            if self._loading.get(key) is running:
                del self._loading[key]
            running.set_result(None)

    def get(self, key: tuple[Any, ...], now: datetime) -> tuple[int, dict[str, Any]] | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if now >= found[2]:
            del self._entries[key]
            return None
        return found[0], found[1]

    def put(self, key: tuple[Any, ...], row: dict[str, Any], until: datetime) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (int(row["cgen"]), row, until)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


NO_CREDENTIAL: dict[str, Any] = {"cid": None}  # what ``credential`` finds for none


def _facts_params(codec: _Codec, principal: Principal, name: str, now: datetime) -> dict[str, Any]:
    return {
        "aid": codec.id(principal.account_id),
        "oid": codec.id(principal.organization_id),
        "now": codec.time(now),
        **_names(name),
    }


async def facts(
    db: TokenDB, principal: Principal, names: list[str], now: datetime
) -> dict[str, RepoFacts]:
    """The facts of each repository for ``principal`` (one statement per repository)."""
    codec = db.codec
    found: dict[str, RepoFacts] = {}
    held = principal.account_id is not None or principal.organization_id is not None
    statement = "facts_held" if held else "facts"
    for name in names:
        rows = await db.rows(statement, _facts_params(codec, principal, name, now))
        found[name] = repo_facts(name, rows[0], codec)
    return found


def facts_on(
    conn: Connection, principal: Principal, names: list[str], now: datetime
) -> dict[str, RepoFacts]:
    """The same, synchronously on a SQLAlchemy connection (the JSON API)."""
    codec = _Codec(conn.dialect.name)
    found: dict[str, RepoFacts] = {}
    for name in names:
        params = _facts_params(codec, principal, name, now)
        row = conn.exec_driver_sql(codec.statements["facts"], params).one()
        found[name] = repo_facts(name, dict(row._mapping), codec)
    return found
