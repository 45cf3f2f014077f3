"""/healthz and /readyz: the process is up; the database, the schema and the keys are usable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from store import migrate
from store.db import make_engine, make_sessionmaker
from store.keys.service import KeyRing
from store.observability import health


def test_healthz_answers_without_touching_anything(app: FastAPI) -> None:
    app.state.sessionmaker = None  # no database at all
    with TestClient(app) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_ready_when_database_schema_and_keys_are_usable(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert "failing" not in body
    assert {name: c["status"] for name, c in body["checks"].items()} == {
        "database": "ok",
        "migrations": "ok",
        "keys": "ok",
    }
    # Both signing keys were loaded through the key ring (created on first use).
    assert "registry " in body["checks"]["keys"]["detail"]
    assert "license lic-" in body["checks"]["keys"]["detail"]


def test_a_database_without_migrations_is_not_ready(
    client: TestClient, connection: Connection
) -> None:
    connection.execute(text("DELETE FROM alembic_version"))  # rolled back after the test
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unready"
    assert body["failing"] == ["migrations"]
    migrations = body["checks"]["migrations"]
    assert migrations["status"] == "fail"
    assert "at revision none" in migrations["detail"]
    assert "store db upgrade" in migrations["detail"]
    assert body["checks"]["keys"]["status"] == "skipped"


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))


def test_the_revision_graph_read_from_the_files_is_alembics() -> None:
    scripts = _scripts()
    graph = migrate.revision_graph()
    expected = {rev.revision: tuple(rev._all_down_revisions) for rev in scripts.walk_revisions()}
    assert {r: set(p) for r, p in graph.items()} == {r: set(p) for r, p in expected.items()}
    assert migrate.graph_heads(graph) == set(scripts.get_heads())
    # Below every head, nothing is missing; from nothing, every head is.
    assert migrate.revisions_behind(set(scripts.get_heads())) == []
    assert migrate.revisions_behind(set()) == sorted(scripts.get_heads())


_WORKER_PRELUDE = """
import asyncio, base64, sys
from store import migrate
from store.config import Settings
from store.db import make_engine
migrate.upgrade(make_engine(Settings().resolved_database_url))
for name in [m for m in sys.modules if m.split(".")[0] in ("alembic", "mako", "pygments")]:
    del sys.modules[name]
from store.app import create_serving_app
app = create_serving_app()
async def get(path, headers=(), query=b""):
    sent = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "headers": list(headers),
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        if message["type"] == "http.response.start":
            sent.append(message["status"])
    await app(scope, receive, send)
    return sent[0]
auth = b"Basic " + base64.b64encode(b"nobody:secret")
assert asyncio.run(get("/readyz")) == 200
assert asyncio.run(get("/token", [(b"authorization", auth)], b"service=store-registry")) == 401
assert asyncio.run(get("/healthz")) == 200
# What only pages and the JSON API use: their modules, templates and models.
def lazy_loaded():
    lazy = {"alembic", "mako", "pygments", "httpx", "markdown_it", "nh3", "snowballstemmer",
            "Stemmer", "segno", "jinja2", "pyotp", "stripe"}
    found = {m.split(".")[0] for m in sys.modules} & lazy
    found |= {m for m in sys.modules if m.startswith("store.") and (
        m.endswith((".api", ".docker_api", ".public", ".sale_notices_api", ".webhook_api"))
        or m.startswith(("store.web.routes_", "store.web.templating", "store.web.errors")))}
    return sorted(found)
"""


def _run_worker(tmp_path: Path, code: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.update(STORE_DATA_DIR=str(tmp_path), STORE_SECRET_KEY="s" * 32, STORE_ENVIRONMENT="test")
    result = subprocess.run(
        [sys.executable, "-c", _WORKER_PRELUDE + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_serving_workers_do_not_load_what_only_pages_and_the_api_use(tmp_path: Path) -> None:
    """The app a worker runs, after /readyz, /healthz and a /token request: neither alembic
    (with Mako and Pygments) nor httpx is imported (≈ 18 MiB per worker), nor what only
    pages, search and two-factor enrolment use (markdown-it, nh3, Snowball, segno: ≈ 7
    MiB), nor the pages and the JSON API themselves (Jinja2, the page and API modules and
    their pydantic models: ≈ 15 MiB)."""
    assert _run_worker(tmp_path, "print(lazy_loaded())")[-1] == "[]"


def test_a_lean_worker_serves_every_route_from_their_first_request(tmp_path: Path) -> None:
    """Pages and the JSON API are loaded by the first request for one of them (several at
    once here, with the probes and /token in between), and then the worker serves exactly
    the routes of an app built with all of them at start-up."""
    code = """
async def first_requests():
    return await asyncio.gather(
        get("/"), get("/api/v1/openapi.json"), get("/healthz"), get("/legal/terms"),
        get("/token", [(b"authorization", auth)], b"service=store-registry"),
        get("/api/v1/products"), get("/no/such/page"),
    )
print(asyncio.run(first_requests()))
from store.app import create_app
from store.fastpath import walk_routes
def table(routes):
    return sorted((prefix + route.path, type(route).__name__, sorted(getattr(route, "methods", None) or ()))
                  for prefix, route in walk_routes(routes))
print(table(app.routes) == table(create_app(Settings(), migrate=False).routes))
print(sorted(app._fast) == sorted(create_app(Settings(), migrate=False)._open_door()))
print(len(lazy_loaded()) > 20)
"""
    statuses, same_routes, same_fast, loaded = _run_worker(tmp_path, code)[-4:]
    assert statuses == "[200, 200, 200, 200, 401, 200, 404]"
    assert (same_routes, same_fast, loaded) == ("True", "True", "True")


def _set_revisions(connection: Connection, revisions: set[str]) -> None:
    connection.execute(text("DELETE FROM alembic_version"))  # rolled back after the test
    for rev in sorted(revisions):
        connection.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": rev}
        )


def test_a_database_behind_the_code_is_not_ready(
    client: TestClient, connection: Connection
) -> None:
    scripts = _scripts()
    head, *other_heads = sorted(scripts.get_heads())
    previous = scripts.get_revision(head).down_revision
    assert previous is not None
    below = {previous} if isinstance(previous, str) else set(previous)
    _set_revisions(connection, set(other_heads) | below)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["migrations"]
    assert head in response.json()["checks"]["migrations"]["detail"]


def test_a_database_ahead_of_the_code_is_ready(client: TestClient, connection: Connection) -> None:
    # A newer release migrated it (rolling upgrade): migrations only add, this code still runs.
    _set_revisions(connection, {"f00dfeedbeef"})
    assert client.get("/readyz").status_code == 200


def test_a_positive_migration_check_is_cached(
    app: FastAPI, client: TestClient, connection: Connection
) -> None:
    assert client.get("/readyz").status_code == 200
    connection.execute(text("DELETE FROM alembic_version"))
    cached = client.get("/readyz").json()["checks"]["migrations"]
    assert cached == {"status": "ok", "detail": "current (cached)"}
    app.state.readiness = health.Readiness(app, cache_seconds=0)
    assert client.get("/readyz").json()["failing"] == ["migrations"]


def test_keys_that_cannot_be_decrypted_make_the_store_unready(
    app: FastAPI, client: TestClient
) -> None:
    app.state.keyring.signer("registry")  # created under the store's secret
    app.state.keyring = KeyRing(lambda: app.state.sessionmaker, "another-secret-" + "x" * 32)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["keys"]
    assert body["checks"]["keys"]["detail"].startswith("the registry signing key: ")


def test_an_unreachable_database_is_named(app: FastAPI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path}/missing/dir/store.db")
    app.state.sessionmaker = make_sessionmaker(engine)
    try:
        with TestClient(app) as client:
            response = client.get("/readyz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert body["checks"]["database"]["detail"].startswith("OperationalError: ")
    assert body["checks"]["migrations"]["status"] == "skipped"
    assert body["checks"]["keys"]["status"] == "skipped"


def test_probes_are_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)
