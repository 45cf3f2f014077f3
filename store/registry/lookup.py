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

Values are encoded per dialect: SQLite keeps UUIDs as 32 hex digits and datetimes as naive
UTC ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy's ``Uuid`` and ``UTCDateTime`` write);
PostgreSQL gets native values.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from store.catalog.periods import BillingKind
from store.licensing.usable import USABLE_SQL
from store.registry.grants import Principal, RepoFacts, product_repository

log = logging.getLogger("store.registry.lookup")
LAST_USED_RESOLUTION = timedelta(minutes=1)
PG_POOL_SIZE = 8  # connections per worker process; each query holds one for one round trip

# --- SQL ---------------------------------------------------------------------------------


# The statements are assembled once, at import, from the constant fragments below (the only
# values interpolated are column references and placeholder names, never input).


FREE = BillingKind.FREE.value  # raw SQL below names the billing kind by its stored value


def _facts_columns(aid: str, oid: str | None) -> str:
    owner = (
        f"e.account_id = {aid} OR e.organization_id IN "
        f"(SELECT m2.organization_id FROM memberships m2 WHERE m2.account_id = {aid})"
    )
    if oid is not None:
        owner = f"e.organization_id = {oid} OR {owner}"
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
       (SELECT min(CASE WHEN ti.billing = '{FREE}' AND ti.public THEN 1 ELSE 0 END)
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
    facts = _facts_columns("c.faid", "c.foid" if robots else None)
    return f"SELECT c.*, {facts}\nFROM ({credential}) AS c{_REPO_JOINS}"


STATEMENTS: dict[str, str] = {
    "token": _with_credential(_TOKEN_CREDENTIAL, robots=True),
    "username": _with_credential(_ACCOUNT_CREDENTIAL.format(column="username"), robots=False),
    "email": _with_credential(_ACCOUNT_CREDENTIAL.format(column="email"), robots=False),
    "facts": f"SELECT {_facts_columns(':aid', ':oid')}\nFROM (SELECT 1 AS one) AS one"
    + _REPO_JOINS,
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

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

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

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _LoopPool:
    """psycopg async connections of one event loop: at most ``size``, FIFO waiters."""

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self.opened = 0
        self.idle: list[Any] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.all: set[Any] = set()

    async def get(self) -> Any:
        import psycopg

        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
                self._forget(conn)
            if self.opened < self.size:
                self.opened += 1
                try:
                    conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                except BaseException:
                    self.opened -= 1
                    self._wake()
                    raise
                self.all.add(conn)
                return conn
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                raise

    def put(self, conn: Any) -> None:
        self.idle.append(conn)
        self._wake()

    def discard(self, conn: Any) -> None:
        _finish(conn)
        self._forget(conn)
        self._wake()

    def _forget(self, conn: Any) -> None:
        if conn in self.all:
            self.all.discard(conn)
            self.opened -= 1

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.pop(0)
            if not waiter.done():
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

    def _current(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._loop is not loop:
            if self._pool is not None:
                self._pool.close()  # a loop that is gone (tests run several in turn)
            self._loop, self._pool = loop, _LoopPool(self.conninfo, self.size)
        return self._pool

    async def rows(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        import psycopg

        pool = self._current()
        sql = _PYFORMAT[statement]
        for attempt in (1, 2):
            conn = await pool.get()
            try:
                cursor = await conn.execute(sql, params)
                names = self._names.get(statement)
                if names is None:  # cursor.description builds objects: read it once
                    names = self._names[statement] = [d.name for d in cursor.description]
                rows = await cursor.fetchall()
            except psycopg.OperationalError:
                # The connection died (database restart, network): once more on a new one.
                pool.discard(conn)
                if attempt == 2:
                    raise
                continue
            except BaseException:
                pool.discard(conn)  # cancelled or failed mid-query: its state is unknown
                raise
            pool.put(conn)
            return [dict(zip(names, row, strict=True)) for row in rows]
        raise AssertionError("unreachable")

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
        # every active tier free and public (None: no active tier, so not public)
        product_public=row["all_public"] == 1,
        entitled=bool(row["entitled"]),
        marked_public=row["marked_public"] == 1,
    )


async def credential(
    db: TokenDB, statement: str, params: dict[str, Any], repository: str, now: datetime
) -> dict[str, Any]:
    """The credential row (``token``: ``hash``; ``username``/``email``: ``login``) joined
    with the facts of ``repository`` ("" for none) for the principal it stands for;
    ``{"cid": None}`` when there is no such credential."""
    codec = db.codec
    values = {
        **params,
        "now": codec.time(now),
        "cutoff": codec.time(now - LAST_USED_RESOLUTION),
        **_names(repository),
    }
    if statement != "token":
        del values["cutoff"]
    rows = await db.rows(statement, values)
    return rows[0] if rows else NO_CREDENTIAL


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
    for name in names:
        rows = await db.rows("facts", _facts_params(codec, principal, name, now))
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
