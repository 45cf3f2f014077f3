"""/healthz and /readyz: the process is up; the database, the schema and the keys are usable."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

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


def _set_revisions(connection: Connection, revisions: set[str]) -> None:
    connection.execute(text("DELETE FROM alembic_version"))  # rolled back after the test
    for rev in sorted(revisions):
        connection.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": rev}
        )


def test_a_database_behind_the_code_is_not_ready(
    client: TestClient, connection: Connection
) -> None:
    scripts = health._scripts()
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
