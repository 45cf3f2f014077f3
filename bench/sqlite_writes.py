"""Concurrent writers on the embedded default (SQLite) beside PostgreSQL, in one run.

    python bench/sqlite_writes.py [--seconds 30] [--writers 32] [--workers 2]

Loopback only and bounded in time. For each database in turn (SQLite in a fresh data
directory, then a new PostgreSQL database on BENCH_PG_URL, dropped afterwards) it starts
``store serve --workers N``, seeds accounts with API tokens, and runs ``--writers``
closed-loop clients for ``--seconds``, each sending one request after the other from this
mix of writes:

- ``api`` 40 %: ``POST /api/v1/me/tokens`` (a personal access token, as a logged-in user);
- ``event`` 50 %: a registry pull notification (``POST /registry/events``, one event);
- ``login`` 10 %: a failed ``POST /api/v1/auth/token`` (the rate limiter counts it),

while four more clients read (``GET /api/v1/products``) to show whether reads wait behind
writers. Prints per class requests/s, p50/p99 latency and errors (any 5xx or no answer;
must be 0), then checks that every write is in the database (tokens made, pulls counted,
failed log-ins counted). The SQLite/PostgreSQL ratio of write throughput is the figure to
compare between runs (machines drift; ratios from one run do not). Exits 1 on any error or
lost write.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
HOST = "127.0.0.1"  # loopback only, always
NOTIFY_SECRET = "bench-notify-secret"
MIX = (("api", 40), ("event", 50), ("login", 10))
READERS = 4
ACCOUNTS = 200
REPOSITORY = "bench/app"


@dataclass
class Target:
    backend: str
    url: str
    tokens: list[str]
    logins: list[str]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pg(statement: str) -> None:
    from sqlalchemy import text

    from store.db import make_engine

    admin = make_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(statement))
    admin.dispose()


def seed(url: str) -> tuple[list[str], list[str]]:
    from store import migrate, security
    from store.accounts import service as accounts
    from store.db import make_engine, make_sessionmaker, session_scope

    security.use_cheap_hashing_for_tests()  # seeding only: hundreds of accounts
    engine = make_engine(url)
    migrate.upgrade(engine)
    tokens, logins = [], []
    with session_scope(make_sessionmaker(engine)) as session:
        for i in range(ACCOUNTS):
            account = accounts.create_account(
                session, username=f"bench{i}", email=f"bench{i}@example.com", password="x" * 12
            )
            tokens.append(
                accounts.create_token(
                    session, kind="personal", name="seed", scopes=["api"], created_by=account
                ).secret
            )
            logins.append(account.username)
    engine.dispose()
    return tokens, logins


def _event() -> bytes:
    return json.dumps(
        {
            "events": [
                {
                    "id": str(uuid.uuid4()),
                    "timestamp": "2026-12-01T12:00:00Z",
                    "action": "pull",
                    "target": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "repository": REPOSITORY,
                        "digest": f"sha256:{uuid.uuid4().hex * 2}",
                    },
                    "request": {"method": "GET"},
                }
            ]
        }
    ).encode()


async def drive(port: int, target: Target, seconds: float, writers: int) -> Stats:
    import httpx

    stats = Stats(
        {k: [] for k, _ in (*MIX, ("read", 0))},
        {k: [] for k, _ in (*MIX, ("read", 0))},
        {k: 0 for k, _ in (*MIX, ("read", 0))},
    )
    slots = [kind for kind, weight in MIX for _ in range(weight)]
    limits = httpx.Limits(max_connections=writers + READERS)
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", limits=limits, timeout=60
    ) as client:

        async def request(kind: str, i: int) -> None:
            if kind == "api":
                method, path = "POST", "/api/v1/me/tokens"
                headers = {"Authorization": f"Bearer {target.tokens[i % len(target.tokens)]}"}
                body = json.dumps({"name": f"bench-{uuid.uuid4().hex[:12]}"}).encode()
                headers["Content-Type"] = "application/json"
            elif kind == "event":
                method, path, body = "POST", "/registry/events", _event()
                headers = {
                    "Authorization": f"Bearer {NOTIFY_SECRET}",
                    "Content-Type": "application/vnd.docker.distribution.events.v1+json",
                }
            elif kind == "login":
                method, path = "POST", "/api/v1/auth/token"
                login = target.logins[i % len(target.logins)]
                body = json.dumps({"login": login, "password": "wrong password"}).encode()
                headers = {"Content-Type": "application/json"}
            else:
                method, path, headers, body = "GET", "/api/v1/products", {}, None
            started = time.perf_counter()
            stats.sent[kind] += 1
            try:
                response = await client.request(method, path, headers=headers, content=body)
                if response.status_code >= 500:
                    stats.errors[kind].append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                stats.errors[kind].append(f"{type(exc).__name__}: {exc}")
            stats.latencies[kind].append(time.perf_counter() - started)

        async def writer(n: int) -> None:
            rng = random.Random(n)
            i = n
            while time.perf_counter() < deadline:
                i += writers
                await request(rng.choice(slots), i)

        async def reader() -> None:
            while time.perf_counter() < deadline:
                await request("read", 0)

        await asyncio.gather(*(writer(n) for n in range(writers)), *(reader() for _ in range(4)))
    return stats


def check(url: str, target: Target, stats: Stats) -> list[str]:
    from sqlalchemy import func, select

    from store.accounts.models import AccessToken
    from store.db import make_engine
    from store.ratelimit import RateLimit
    from store.registry.models import HubRepository

    engine = make_engine(url)
    with engine.connect() as conn:
        made = conn.scalar(
            select(func.count()).select_from(AccessToken).where(AccessToken.name.like("bench-%"))
        )
        pulls = conn.scalar(
            select(HubRepository.pull_count).where(HubRepository.name == REPOSITORY)
        )
        counted = conn.scalar(
            select(func.coalesce(func.sum(RateLimit.hits), 0)).where(
                RateLimit.key.like("login-acct:%")
            )
        )
    engine.dispose()
    problems = []
    api_ok = stats.sent["api"] - len(stats.errors["api"])
    if made != api_ok:
        problems.append(f"{api_ok} tokens made, {made} in the database")
    if (pulls or 0) != stats.sent["event"] - len(stats.errors["event"]):
        problems.append(f"{stats.sent['event']} pull events sent, {pulls} counted")
    # Failed log-ins over an account's limit are refused (429) before they are tried.
    if counted < min(stats.sent["login"], 1):
        problems.append(f"{stats.sent['login']} failed log-ins, {counted} counted")
    return problems


def run_one(backend: str, args: argparse.Namespace, tmp: Path) -> tuple[Stats, list[str]]:
    data_dir = tmp / backend
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE_", "STRIPE_"))}
    env.update(
        STORE_DATA_DIR=str(data_dir),
        STORE_SECRET_KEY="bench-sqlite-writes-secret-0123456789",
        STORE_REGISTRY_NOTIFY_SECRET=NOTIFY_SECRET,
        PYTHONPATH=str(ROOT),
    )
    pg_name = f"store_bench_writes_{os.getpid()}"
    if backend == "postgresql":
        _pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        _pg(f'CREATE DATABASE "{pg_name}"')
        url = PG_URL.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
        url += f"/{pg_name}"
        env["STORE_DATABASE_URL"] = url
    else:
        url = f"sqlite:///{data_dir / 'store.db'}"
    tokens, logins = seed(url)
    target = Target(backend, url, tokens, logins)
    port = _free_port()
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
         "--workers", str(args.workers), "--log-level", "warning"],
        env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait(port, server)
        stats = asyncio.run(drive(port, target, args.seconds, args.writers))
        time.sleep(0.5)
        problems = check(url, target, stats)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        if backend == "postgresql":
            _pg(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    return stats, problems


def _wait(port: int, server: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("store serve exited; see its log")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("store serve did not start")


def _pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    if p == 50:
        return statistics.median(ordered) * 1000
    return ordered[max(0, int(len(ordered) * p / 100) - 1)] * 1000


def report(backend: str, stats: Stats, seconds: float) -> tuple[float, int]:
    print(f"\n{backend}")
    print(f"{'class':<8}{'requests':>10}{'req/s':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    writes, errors = 0, 0
    for kind in (*(k for k, _ in MIX), "read"):
        lat = stats.latencies[kind]
        n = len(lat)
        if kind != "read":
            writes += n
        errors += len(stats.errors[kind])
        print(
            f"{kind:<8}{n:>10}{n / seconds:>9.1f}{len(stats.errors[kind]):>8}"
            f"{_pct(lat, 50):>9.1f}{_pct(lat, 99):>9.1f}"
        )
        for line in stats.errors[kind][:3]:
            print(f"  error: {line}")
    print(f"{'writes':<8}{writes:>10}{writes / seconds:>9.1f}{errors:>8}")
    return writes / seconds, errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="per database")
    parser.add_argument("--writers", type=int, default=32, help="concurrent writing clients")
    parser.add_argument("--workers", type=int, default=2, help="store serve --workers")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    if not 0 < args.seconds <= 300:
        parser.error("--seconds must be in (0, 300]")
    tmp = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    rates: dict[str, float] = {}
    failed = False
    for backend in args.backends.split(","):
        load = os.getloadavg()[0]
        stats, problems = run_one(backend, args, tmp)
        rates[backend], errors = report(backend, stats, args.seconds)
        print(f"load average before: {load:.2f}; writes lost: {problems or 'none'}")
        failed |= bool(errors or problems)
    if {"sqlite", "postgresql"} <= set(rates) and rates["postgresql"]:
        print(
            f"\nSQLite / PostgreSQL write throughput: {rates['sqlite'] / rates['postgresql']:.2f}"
        )
    print(f"logs under {tmp}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
