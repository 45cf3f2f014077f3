"""The token endpoint on the app's own engine, as in production: raw sqlite3 on the event loop
(SQLite file) or psycopg's async connections (PostgreSQL), not the shared test connection.

Each test gets a database of its own (committed data), migrated once per module.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from store import migrate
from store.accounts import service as accounts
from store.app import create_app
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from store.licensing import entitlements
from store.registry import lookup, tokens
from store.registry.routes import registry_state
from tests import pg
from tests.factories import PASSWORD, make_account, make_org, make_product, paid_tier, tier_of

SCOPE = "repository:acme/app:pull"


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def world(backend: str, tmp_path: Path) -> Iterator[dict[str, object]]:
    sqlite = f"sqlite:///{tmp_path / 'fast.db'}"
    url = sqlite if backend == "sqlite" else pg.create_database("fast")
    try:
        yield from _world(backend, url, tmp_path)
    finally:
        if backend != "sqlite":
            pg.drop_database(url)


def _world(backend: str, url: str, tmp_path: Path) -> Iterator[dict[str, object]]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        alice = make_account(session, "alice")
        bob = make_account(session, "bob")
        acme = make_org(session, alice, "acme")
        product = make_product(session, acme, alice, "app", tiers=[paid_tier()])
        grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=bob)
        pat = accounts.create_token(
            session, kind="personal", name="cli", scopes=["pull"], created_by=bob
        ).secret
        robot = accounts.create_token(
            session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
        ).secret
        grant_id = grant.id
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )
    app = create_app(settings, migrate=False)
    try:
        yield {
            "app": app,
            "factory": factory,
            "pat": pat,
            "robot": robot,
            "grant_id": grant_id,
            "backend": backend,
        }
    finally:
        app.state.engine.dispose()
        engine.dispose()


def _access(response: httpx.Response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text
    return tokens.decode_unverified(response.json()["token"])[1]["access"]


def test_fast_path_grants_and_refuses(world: dict[str, object]) -> None:
    app = world["app"]
    with TestClient(app, base_url="http://store.test") as client:  # type: ignore[arg-type]
        expected = "sqlite" if world["backend"] == "sqlite" else "postgresql"
        assert registry_state(app).db.name == expected
        query = {"service": "store-registry", "scope": SCOPE}
        pat = client.get("/token", params=query, headers=_basic("bob", str(world["pat"])))
        assert _access(pat) == [{"type": "repository", "name": "acme/app", "actions": ["pull"]}]
        password = client.get("/token", params=query, headers=_basic("bob", PASSWORD))
        assert _access(password)[0]["actions"] == ["pull"]
        robot = client.get(
            "/token",
            params={"service": "store-registry", "scope": "repository:acme/app:pull,push"},
            headers=_basic("ci", str(world["robot"])),
        )
        assert _access(robot)[0]["actions"] == ["pull", "push"]
        # two repositories: the second one through the facts-only statement
        two = client.get(
            "/token",
            params=[
                ("service", "store-registry"),
                ("scope", SCOPE),
                ("scope", "repository:x/y:pull"),
            ],
            headers=_basic("bob", str(world["pat"])),
        )
        assert {a["name"] for a in _access(two)} == {"acme/app"}  # x/y: private
        anonymous = client.get("/token", params=query)
        assert anonymous.status_code == 401 and "Log in" in anonymous.json()["errors"][0]["message"]
        unknown = client.get("/token", params=query, headers=_basic("bob", "stp_" + "x" * 40))
        assert unknown.status_code == 401
        wrong = client.get("/token", params=query, headers=_basic("bob", "wrong password"))
        assert wrong.status_code == 401
        # last_used_at was recorded (through SQLAlchemy, off the event loop)
        with world["factory"]() as session:  # type: ignore[operator]
            used = session.execute(
                text("SELECT count(*) FROM access_tokens WHERE last_used_at IS NOT NULL")
            ).scalar()
        assert used == 2
        # revocation is seen by the very next request: nothing about access is cached
        with session_scope(world["factory"]) as session:  # type: ignore[arg-type]
            alice = accounts.get_account_by_username(session, "alice")
            grant = entitlements.get_entitlement(session, world["grant_id"])
            entitlements.revoke(session, entitlement=grant, actor=alice, reason="refund")
        for headers in (_basic("bob", str(world["pat"])), _basic("bob", PASSWORD)):
            refused = client.get("/token", params=query, headers=headers)
            assert refused.status_code == 401
            assert "revoked" in refused.json()["errors"][0]["message"]


def test_concurrent_requests_beyond_the_pool(world: dict[str, object]) -> None:
    """More requests in flight than pooled connections, password checks (argon2 in the
    threadpool) among them: nothing waits on a connection held across an await."""
    app = world["app"]

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://store.test") as c:
            query = {"service": "store-registry", "scope": SCOPE}
            calls = []
            for i in range(3 * lookup.PG_POOL_SIZE + 8):
                creds = ("bob", PASSWORD) if i % 2 else ("bob", str(world["pat"]))
                calls.append(c.get("/token", params=query, headers=_basic(*creds)))
            responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
        return [r.status_code for r in responses]

    with TestClient(app, base_url="http://store.test"):  # lifespan: disposed at the end
        registry_state(app).password_cache.clear()
        assert set(asyncio.run(burst())) == {200}


@pytest.mark.skipif(not os.environ.get("STORE_TEST_DATABASE_URL"), reason="PostgreSQL only")
def test_postgres_connection_lost_is_retried(world: dict[str, object]) -> None:
    if world["backend"] != "postgresql":
        pytest.skip("PostgreSQL only")
    app = world["app"]
    query = {"service": "store-registry", "scope": SCOPE}
    with TestClient(app, base_url="http://store.test") as client:  # type: ignore[arg-type]
        headers = _basic("bob", str(world["pat"]))
        assert client.get("/token", params=query, headers=headers).status_code == 200
        with world["factory"]() as session:  # type: ignore[operator]
            # what a database restart does to the pooled connections of the token path
            session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert client.get("/token", params=query, headers=headers).status_code == 200


def test_concurrent_checks_of_one_password_share_one_argon2_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from store import security
    from store.registry import credentials

    calls: list[str] = []

    def slow_verify(password_hash: str, password: str) -> bool:
        calls.append(password)
        import time

        time.sleep(0.05)
        return password == "right"

    monkeypatch.setattr(security, "check_password", slow_verify)
    cache = credentials.PasswordCache()

    async def run() -> tuple[list[bool], list[bool], bool]:
        good = await asyncio.gather(*(cache.check("bob", "right", "h1") for _ in range(10)))
        bad = await asyncio.gather(*(cache.check("bob", "wrong", "h1") for _ in range(10)))
        return list(good), list(bad), await cache.check("bob", "right", "h1")

    good, bad, again = asyncio.run(run())
    assert good == [True] * 10 and bad == [False] * 10 and again is True
    assert calls == ["right", "wrong"]  # one run each; the third check hit the cache
    assert len(cache) == 1  # failures are not remembered


def test_sqlite_reads_each_credential_without_a_temporary_table(connection: Connection) -> None:
    """The credential is flattened into the statement: no table is materialized per request
    (the token's credential, a join of three tables, was, as a LEFT JOIN's right side)."""
    if connection.dialect.name != "sqlite":
        pytest.skip("SQLite's query plan")
    params = {
        "hash": "x",
        "login": "x",
        "now": "2026-01-01 00:00:00.000000",
        "cutoff": "2026-01-01 00:00:00.000000",
        "ns": "acme",
        "repo": "acme/app",
        "product": "acme/app",
    }
    for name in ("token", "username", "email"):
        sql = lookup.STATEMENTS[name]
        wanted = {k: v for k, v in params.items() if f":{k}" in sql}
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", wanted)]
        assert not [step for step in plan if "MATERIALIZE" in step], (name, plan)
        assert connection.exec_driver_sql(sql, wanted).all() == []  # no such credential
