"""What a registry pull notification costs the store, in-process, beside a trivial request.

    python bench/notify.py [--rounds 15] [--per-round 20] [--backend sqlite|postgresql|both]

A fresh store (SQLite in a temporary data directory; PostgreSQL: a throw-away database
beside BENCH_PG_URL) seeded like ``bench/pull.py`` (acme/app, a published product with a
repository), the store's ASGI app built by ``create_app`` and called directly (no network, no
HTTP client: what the store's own request metrics time). Interleaved rounds of:

- ``healthz``: ``GET /healthz`` through the app (the front door's floor);
- ``notify``: ``POST /registry/events`` with one pull event (a manifest GET of acme/app, a
  new event id and client each time) through the app: the front door, the credential check,
  the body, the write turn, the thread hop, the unit of work and its commit, the metrics;
- ``unit``: the unit of work alone (``store.registry.events.process`` and the commit);
- ``search``: the rewrite of acme/app's search documents (its repository's and its
  listing's) that a pull makes due (``store.registry.pull_search`` runs it once a second
  per process for every repository pulled in that second).

Prints per case and backend the median and p90 in ms, the ratio notify / healthz, the SQL
statements per pull event (and per search rewrite), and the load average before and after.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench._common

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    create_pg_database,
    drop_pg_database,
    free_port,
    loadavg,
    percentile,
    seed_shop,
    store_env,
)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def pull_event(n: int) -> dict[str, Any]:
    """A manifest GET of acme/app as docker-registry reports it (a client of its own)."""
    return {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-12-03T17:42:10.123456789Z",
        "action": "pull",
        "target": {
            "mediaType": MANIFEST,
            "digest": "sha256:" + "c" * 64,
            "size": 1203,
            "length": 1203,
            "repository": "acme/app",
            "url": "http://127.0.0.1:5000/v2/acme/app/manifests/sha256:" + "c" * 64,
            "tag": "1",
        },
        "request": {
            "id": str(uuid.uuid4()),
            "addr": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}:40000",
            "host": "127.0.0.1:5000",
            "method": "GET",
            "useragent": "skopeo/1.9.3",
        },
        "actor": {"name": "bob"},
        "source": {"addr": "registry:5000", "instanceID": str(uuid.uuid4())},
    }


class Asgi:
    """Requests straight into the ASGI app (no transport): one response's status."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
            + [(b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


def run_backend(backend: str, rounds: int, per_round: int) -> dict[str, Any]:
    import orjson
    from sqlalchemy import event, select

    tmp = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    env = store_env(tmp / "data", "bench-notify-secret-0123456789abcdef", free_port())
    pg_name = f"bench_notify_{os.getpid()}"  # two runs at once never share a database
    if backend == "postgresql":
        url = create_pg_database(pg_name)
        env["STORE_DATABASE_URL"] = url.replace("postgresql://", "postgresql+psycopg://", 1)
    saved = dict(os.environ)
    try:
        seed_shop(env, key_purposes=("registry",))
        os.environ.clear()
        os.environ.update(env)
        return asyncio.run(_measure(rounds, per_round, orjson, event, select))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)
        if backend == "postgresql":
            drop_pg_database(pg_name)


async def _measure(rounds: int, per_round: int, orjson: Any, event: Any, select: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    from store.app import create_app
    from store.config import Settings
    from store.registry import events, hub
    from store.registry.models import HubRepository

    app = create_app(Settings(), migrate=False)
    settings = app.state.settings
    call = Asgi(app)
    headers = {
        "authorization": f"Bearer {settings.resolved_notify_secret}",
        "content-type": events.MEDIA_TYPE,
    }
    engine = app.state.engine
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        statements.append(sql)

    serial = iter(range(1, 10**9))
    async with app.router.lifespan_context(app):
        with app.state.sessionmaker() as session:
            # acme/app's repository: made by its first pull (or push), indexed as any new one
            events.process(session, {"events": [pull_event(0)]})
            session.commit()
            repo_id = session.scalar(
                select(HubRepository.id).where(HubRepository.name == "acme/app")
            )

        async def healthz() -> None:
            assert await call("GET", "/healthz", {}, b"") == 200

        async def notify() -> None:
            body = orjson.dumps({"events": [pull_event(next(serial))]})
            assert await call("POST", "/registry/events", headers, body) == 200

        def unit_work() -> None:
            with app.state.sessionmaker() as session:
                outcome = events.process(
                    session, {"events": [pull_event(next(serial))]}, defer_search=True
                )
                session.commit()
            assert outcome.processed == 1

        async def unit() -> None:
            await app.state.write_turns.run(unit_work)

        def search_work() -> None:
            with app.state.sessionmaker() as session:
                hub.refresh_search(session, [repo_id])
                session.commit()

        async def search() -> None:
            await app.state.write_turns.run(search_work)

        cases: dict[str, Callable[[], Any]] = {
            "healthz": healthz,
            "notify": notify,
            "unit": unit,
            "search": search,
        }
        for case in cases.values():  # warm up: caches, connections, the first document
            for _ in range(5):
                await case()
        later = app.state.registry.pull_search
        if later is not None:  # its thread would rewrite during the timings: flushed below
            later._interval = 3600.0
        counts: dict[str, int] = {}
        for name, case in (("unit", unit), ("search", search)):
            statements.clear()
            event.listen(engine, "before_cursor_execute", seen)
            try:
                await case()
            finally:
                event.remove(engine, "before_cursor_execute", seen)
            counts[name] = sum(
                1
                for s in statements
                if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "BEGIN", "PRAGMA"))
            )
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu_times: dict[str, list[float]] = {name: [] for name in cases}
        names = list(cases)
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                case = cases[name]
                for _ in range(per_round):
                    started, cpu = time.perf_counter(), time.process_time()
                    await case()
                    times[name].append((time.perf_counter() - started) * 1000)
                    cpu_times[name].append((time.process_time() - cpu) * 1000)
            if later is not None:  # the pulls' batched search rewrites: outside the timings
                await run_in_threadpool(later.flush)
    return {"times": times, "cpu": cpu_times, "statements": counts}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"load average before: {loadavg()}")
    for backend in backends:
        result = run_backend(backend, args.rounds, args.per_round)
        times = result["times"]
        print(
            f"\n{backend}: {args.rounds} interleaved rounds of {args.per_round} per case; "
            f"SQL statements: {result['statements']['unit']} per pull event, "
            f"{result['statements']['search']} per search rewrite"
        )
        print(f"{'case':<10}{'median ms':>11}{'p90 ms':>9}{'CPU ms (median)':>17}")
        for name, values in times.items():
            p90 = percentile(values, 90)
            cpu = statistics.median(result["cpu"][name])
            print(f"{name:<10}{statistics.median(values):>11.2f}{p90:>9.2f}{cpu:>17.2f}")
        ratio = statistics.median(times["notify"]) / statistics.median(times["healthz"])
        print(f"notify / healthz = {ratio:.1f} (medians)")
    print(f"\nload average after: {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
