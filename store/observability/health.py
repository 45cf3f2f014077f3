"""``/healthz`` (the process is up), ``/readyz`` (it can serve) and ``/metrics``.

Readiness checks, in order (a check that cannot run because an earlier one failed is
``skipped``):

- ``database``: ``SELECT 1`` on the store's database;
- ``migrations``: the database has every revision this code needs. A database *ahead* of
  the code (a newer release migrated it during a rolling upgrade) is ready: migrations
  only add. A positive answer is cached for ``MIGRATIONS_CACHE_SECONDS``;
- ``keys``: the registry and license signing keys can be loaded (decrypted with this
  process's secret) through the key ring, as ``/token`` and licensing do.

``/readyz`` answers 200 ``{"status": "ready", ...}`` or 503 ``{"status": "unready",
"failing": [names], "checks": {name: {"status", "detail"}}}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from store import migrate
from store.db import read_only_connection
from store.observability import metrics

MIGRATIONS_CACHE_SECONDS = 15.0
KEY_PURPOSES = ("registry", "license")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | fail | skipped
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def migrations_behind(current: set[str]) -> list[str]:
    """Head revisions of this code that the database (at ``current``) does not have yet
    (``store.migrate.revisions_behind``: read from the migration files, without alembic)."""
    return migrate.revisions_behind(current)


class Readiness:
    """The readiness checks of one application, with the migration check cached."""

    def __init__(self, app: Any, *, cache_seconds: float = MIGRATIONS_CACHE_SECONDS) -> None:
        self._app = app
        self._cache_seconds = cache_seconds
        self._migrations_ok_until = 0.0
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        bind = self._app.state.sessionmaker.kw.get("bind")
        if isinstance(bind, Connection):  # tests: one connection in an outer transaction
            yield bind
            return
        engine: Engine = bind if isinstance(bind, Engine) else self._app.state.engine
        with read_only_connection(engine) as conn:
            yield conn

    def run(self) -> list[Check]:
        with self._lock:
            return self._run()

    def _run(self) -> list[Check]:
        database = Check("database", "ok", "reachable")
        try:
            with self._connection() as conn:
                conn.exec_driver_sql("SELECT 1")
                try:
                    migrations = self._migrations(conn)
                except Exception as exc:
                    migrations = Check("migrations", "fail", _describe(exc))
        except Exception as exc:
            skipped = "skipped: the database is not reachable"
            return [
                Check("database", "fail", _describe(exc)),
                Check("migrations", "skipped", skipped),
                _skip_keys(skipped),
            ]
        if not migrations.ok:
            return [database, migrations, _skip_keys("skipped: the schema is not current")]
        return [database, migrations, self._keys()]

    def _migrations(self, conn: Connection) -> Check:
        if time.monotonic() < self._migrations_ok_until:
            return Check("migrations", "ok", "current (cached)")
        current = migrate.stored_revisions(conn)
        missing = migrations_behind(current)
        if missing:
            at = ", ".join(sorted(current)) or "none"
            return Check(
                "migrations",
                "fail",
                f"the database (at revision {at}) lacks {', '.join(missing)}: "
                "run `store db upgrade`",
            )
        self._migrations_ok_until = time.monotonic() + self._cache_seconds
        return Check("migrations", "ok", "current")

    def _keys(self) -> Check:
        keyring = self._app.state.keyring
        loaded = []
        for purpose in KEY_PURPOSES:
            try:
                loaded.append(f"{purpose} {keyring.signer(purpose).kid}")
            except Exception as exc:
                return Check("keys", "fail", f"the {purpose} signing key: {_describe(exc)}")
        return Check("keys", "ok", "; ".join(loaded))


def _skip_keys(detail: str) -> Check:
    return Check("keys", "skipped", detail)


def _describe(exc: BaseException) -> str:
    """What failed, in one line, without connection strings (SQLAlchemy appends them)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(orig or exc).__name__}: {first}"[:300] if first else type(exc).__name__


def readiness(app: Any) -> Readiness:
    state = getattr(app.state, "readiness", None)
    if state is None:
        state = app.state.readiness = Readiness(app)
    return state


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def healthz(request: Request) -> Response:
    """The process is up and serving (no dependency is checked)."""
    return _json({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to serve: database reachable, schema current, signing keys loadable."""
    checks = await run_in_threadpool(readiness(request.app).run)
    failing = [c.name for c in checks if c.status == "fail"]
    body: dict[str, Any] = {
        "status": "unready" if failing else "ready",
        "checks": {c.name: {"status": c.status, "detail": c.detail} for c in checks},
    }
    if failing:
        body["failing"] = failing
    return _json(body, 503 if failing else 200)


def _private_client(request: Request) -> bool:
    """A socket peer on loopback or a private network that did not come through a proxy
    (proxies add Forwarded / X-Forwarded-For; the public side is then someone else)."""
    import ipaddress

    if request.headers.get("forwarded") or request.headers.get("x-forwarded-for"):
        return False
    peer = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition; with STORE_METRICS_TOKEN set, a matching bearer token
    is required, and with STORE_METRICS_PRIVATE=true a client on a private network (not
    through a proxy) needs none."""
    from store.security import constant_time_equals

    settings = request.app.state.settings
    token, private = settings.metrics_token, settings.metrics_private
    if token or private:
        sent = request.headers.get("authorization", "")
        if not (
            (token and constant_time_equals(sent, f"Bearer {token}"))
            or (private and _private_client(request))
        ):
            if not token:
                detail = "metrics are served to private networks only"
                return _json({"error": "forbidden", "detail": detail}, 403)
            response = _json(
                {"error": "unauthorized", "detail": "metrics need the bearer token"}, 401
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    body = await run_in_threadpool(metrics.exposition)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
