"""Concurrent writes through a real `store serve --workers 2`, on SQLite (the embedded
default) and PostgreSQL: API writes from many users, a stream of registry pull events and
failed log-ins, all at the same instant. Nothing may fail with a 5xx, every write must be
there afterwards, and every failed log-in must be counted by the rate limiter.

On SQLite this is the case a deferred transaction gets wrong (it reads, another process
commits, its write then fails with "database is locked"); store.db makes writers queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from store import migrate, ratelimit
from store.accounts import service as accounts
from store.accounts.models import AccessToken
from store.db import make_engine, make_sessionmaker, session_scope
from store.ratelimit import RateLimit
from store.registry.models import HubRepository
from tests.e2e.registry_env import clean_env, free_port, wait_http
from tests.factories import PASSWORD, make_account
from tests.pg import PG_URL, scratch_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WRITERS = 50
PULLS = 400
FAILED_LOGINS = 16
REPOSITORY = "conc/app"
NOTIFY_SECRET = "concurrency-notify-secret"


@dataclass
class Server:
    base: str
    database_url: str
    tokens: list[str]
    logins: list[str]
    log: Path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("conc_writes") as url:
        yield url


def _seed(database_url: str) -> tuple[list[str], list[str]]:
    """Accounts with an API token each (the writers), and accounts to fail to log in as."""
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with session_scope(make_sessionmaker(engine)) as session:
            tokens = []
            for i in range(WRITERS):
                writer = make_account(session, f"writer{i}")
                issued = accounts.create_token(
                    session, kind="personal", name="seed", scopes=["api", "pull"], created_by=writer
                )
                tokens.append(issued.secret)
            logins = [make_account(session, f"victim{i}").username for i in range(FAILED_LOGINS)]
    finally:
        engine.dispose()
    return tokens, logins


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    tokens, logins = _seed(database_url)
    port = free_port()
    env = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_DATABASE_URL": database_url,
            "STORE_SECRET_KEY": "concurrency-test-secret-0123456789",
            "STORE_REGISTRY_NOTIFY_SECRET": NOTIFY_SECRET,
            "STORE_ENVIRONMENT": "test",
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", "2", "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", timeout=60, proc=proc)
        yield Server(base, database_url, tokens, logins, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pull_event(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-12-01T12:00:00Z",
        "action": "pull",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "repository": REPOSITORY,
            "digest": f"sha256:{i:064x}",
            "tag": f"1.{i}",
        },
        "request": {"id": str(uuid.uuid4()), "method": "GET", "addr": f"127.0.0.{i % 250 + 1}"},
        "actor": {"name": f"puller{i}"},
    }


def _client(server: Server) -> httpx.AsyncClient:
    # A new connection per request: reusing one the server is just closing for being idle
    # (keep-alive timeout, easily reached on a loaded machine) fails on the client's side.
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits)


async def _everything_at_once(server: Server) -> list[tuple[str, int, str]]:
    async with _client(server) as client:

        async def call(kind: str, method: str, path: str, **kw: Any) -> tuple[str, int, str]:
            response = await client.request(method, path, **kw)
            return kind, response.status_code, response.text[:300]

        calls = [
            call(
                "token",
                "POST",
                "/api/v1/me/tokens",
                json={"name": f"conc-{i}", "scopes": ["pull"]},
                headers={"Authorization": f"Bearer {secret}"},
            )
            for i, secret in enumerate(server.tokens)
        ]
        calls += [
            call(
                "event",
                "POST",
                "/registry/events",
                content=json.dumps({"events": [_pull_event(i)]}),
                headers={
                    "Authorization": f"Bearer {NOTIFY_SECRET}",
                    "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                },
            )
            for i in range(PULLS)
        ]
        calls += [
            call(
                "login",
                "POST",
                "/api/v1/auth/token",
                json={"login": login, "password": PASSWORD + "-wrong", "token_name": "x"},
            )
            for login in server.logins
        ]
        order = list(range(len(calls)))
        # Interleave the kinds, as real traffic would be, deterministically.
        order.sort(key=lambda i: (i * 7919) % len(calls))
        return await asyncio.gather(*(calls[i] for i in order))


def test_concurrent_writes_all_succeed_and_all_are_kept(server: Server) -> None:
    results = asyncio.run(_everything_at_once(server))

    failures = [r for r in results if r[1] >= 500]
    assert failures == [], (failures[:5], server.log.read_text()[-3000:])
    by_kind: dict[str, list[int]] = {}
    for kind, status, _ in results:
        by_kind.setdefault(kind, []).append(status)
    assert by_kind["token"] == [201] * WRITERS, [r for r in results if r[0] == "token"][:3]
    assert by_kind["event"] == [200] * PULLS
    assert by_kind["login"] == [401] * FAILED_LOGINS

    engine = make_engine(server.database_url)
    try:
        with engine.connect() as conn:
            made = conn.scalar(
                select(func.count()).select_from(AccessToken).where(AccessToken.name.like("conc-%"))
            )
            pulls = conn.scalar(
                select(HubRepository.pull_count).where(HubRepository.name == REPOSITORY)
            )
            limits = ratelimit.Limits()
            address = ratelimit.key(limits.login_ip, "127.0.0.1")
            per_address = conn.scalar(
                select(func.coalesce(func.sum(RateLimit.hits), 0)).where(RateLimit.key == address)
            )
            per_account = dict(
                conn.execute(
                    select(RateLimit.key, func.sum(RateLimit.hits)).group_by(RateLimit.key)
                ).all()
            )
    finally:
        engine.dispose()
    assert made == WRITERS
    assert pulls == PULLS
    assert per_address == FAILED_LOGINS
    for login in server.logins:
        assert per_account.get(ratelimit.key(limits.login_account, login)) == 1, login


def test_reads_do_not_wait_for_writers(server: Server) -> None:
    """A stream of writes does not hold up reads (WAL on SQLite): every read answers."""

    async def run() -> list[int]:
        async with _client(server) as client:
            writes = [
                client.post(
                    "/registry/events",
                    content=json.dumps({"events": [_pull_event(i)]}),
                    headers={
                        "Authorization": f"Bearer {NOTIFY_SECRET}",
                        "Content-Type": "application/json",
                    },
                )
                for i in range(100)
            ]
            reads = [client.get("/api/v1/products") for _ in range(50)]
            responses = await asyncio.gather(*writes, *reads)
            return [r.status_code for r in responses]

    statuses = asyncio.run(run())
    assert statuses == [200] * 150, sorted(set(statuses))


def test_a_concurrent_schemathesis_run_finds_no_server_error(
    server: Server, tmp_path: Path
) -> None:
    """Generated requests to every operation from four clients at once: never a 5xx.

    Four schemathesis processes, each over a quarter of the API's tags, rather than one
    process with four worker threads: on Python 3.11 the tool's threads race in `ast.parse`
    (a CPython bug: "AST constructor recursion depth mismatch") and report their own crash
    as an error of the operation under test."""
    if not server.database_url.startswith("sqlite"):
        pytest.skip("the embedded default is the database that fails under concurrent writes")
    explore = os.environ.get("STORE_FUZZ") == "1"  # new examples on each run, ten times as many
    schema = httpx.get(f"{server.base}/api/v1/openapi.json", timeout=60).json()
    tags = sorted(
        {tag for item in schema["paths"].values() for op in item.values() for tag in op["tags"]}
    )
    groups = [tags[i::4] for i in range(4)]
    # Each process reads the schema from a file: four loads of it over HTTP at once, on a
    # loaded machine, can outlast the tool's own load timeout.
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(schema))

    def command(group: list[str]) -> list[str]:
        return [
            sys.executable, "-m", "schemathesis.cli", "run",
            str(schema_file), "--url", server.base,
            "--include-tag-regex", "^(" + "|".join(group) + ")$",
            "--checks", "not_a_server_error",
            "--workers", "1",
            "--phases", "examples,coverage,fuzzing",
            "--max-examples", "50" if explore else "5",
            *([] if explore else ["--seed", "20261202"]),
            "--header", f"Authorization: Bearer {server.tokens[0]}",
            "--request-timeout", "60",
            "--suppress-health-check", "all",
        ]  # fmt: skip

    runs = [
        subprocess.Popen(
            command(group),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
        )
        for group in groups
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        if run.returncode != 0:  # whole, in the captured output: an assertion's text is cut
            print(output[-6000:], "\n--- server log\n", server.log.read_text()[-3000:])
        assert run.returncode == 0, output[-1000:]
        assert re.search(r"\b[1-9]\d* generated, [1-9]\d* passed", output), output[-2000:]
