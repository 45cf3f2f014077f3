"""CPU per /token request in-process: the store's ASGI app called directly (no HTTP, no
load generator), with the production executors (raw sqlite3 on the event loop, psycopg's
async pool on PostgreSQL).

    python bench/token_cpu.py [--backend sqlite|postgresql] [--requests 2000] [--repeats 5]
                              [--concurrency 1] [--access-log text|json|off] [--base DIR]

Seeds a fresh store (bench._common.seed_shop: bob entitled to acme/app, his pull token; on
PostgreSQL a new database, dropped afterwards), starts the app's lifespan, then times
``--repeats`` batches of ``--requests`` ``GET /token`` (bob's personal access token, an
entitled pull), ``--concurrency`` at a time, with ``time.process_time`` and prints the
best batch's CPU per request of this process in µs, with the load average. On PostgreSQL
it also prints the statements sent to the database per request (the
``execute`` calls of psycopg's async connections, the token path's). The access log is
configured as ``store serve`` configures it (``--access-log``: its text or JSON lines at
INFO, written to ``/dev/null`` here; ``off``: no line made). ``--base
DIR`` imports ``store`` from another checkout instead of this one (an A/B against main:
run the two alternately, each in a process of its own).
"""

# ruff: noqa: E402  (sys.path is fixed before the imports; see below)
from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path and bench/token.py would shadow
# the standard library's `token` module: drop it before anything imports `tokenize`.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench._common

import argparse
import asyncio
import base64
import tempfile
import time
from pathlib import Path
from typing import Any


def _use_checkout(base: str) -> None:
    """Import ``store`` from ``base``: drop an editable install's import hook first."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
    sys.path.insert(0, os.path.abspath(base))


async def _run(
    app: Any, path: str, query: bytes, auth: str, requests: int, concurrency: int = 1
) -> float:
    headers = [(b"host", b"store.test"), (b"authorization", b"Basic " + auth.encode())]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await app(scope, receive, send)

    started = time.process_time()
    for _ in range(requests // concurrency):
        if concurrency == 1:
            await one()
        else:
            await asyncio.gather(*(one() for _ in range(concurrency)))
    spent = time.process_time() - started
    if set(statuses) != {200}:
        raise SystemExit(f"statuses {sorted(set(statuses))}")
    return spent / (requests // concurrency * concurrency)


async def _lifespan(app: Any) -> tuple[asyncio.Queue[Any], asyncio.Task[Any]]:
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    outbox: asyncio.Queue[Any] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise SystemExit(f"start-up failed: {message}")
    return inbox, task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--access-log", choices=["text", "json", "off"], default="text")
    parser.add_argument("--base", default="")
    args = parser.parse_args()
    if args.base:
        _use_checkout(args.base)
    from bench._common import create_pg_database, drop_pg_database

    pg_name = f"token_cpu_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="token-cpu-") as tmp:
        env = {"STORE_DATA_DIR": str(Path(tmp) / "data"), "STORE_SECRET_KEY": "k" * 32}
        if args.backend == "postgresql":
            env["STORE_DATABASE_URL"] = create_pg_database(pg_name)
        os.environ.update(env)
        try:
            _measure(args, env)
        finally:
            if args.backend == "postgresql":
                drop_pg_database(pg_name)


def _count_statements() -> list[int]:
    """Count the statements the token path sends (psycopg's async ``execute``)."""
    import psycopg

    calls = [0]
    execute = psycopg.AsyncConnection.execute

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await execute(self, *args, **kwargs)

    psycopg.AsyncConnection.execute = counted  # type: ignore[method-assign]
    return calls


def _measure(args: argparse.Namespace, env: dict[str, str]) -> None:
    from bench._common import loadavg, seed_shop

    _, pull = seed_shop(env, key_purposes=("registry",))
    import store
    from store.app import create_app
    from store.config import Settings

    settings = Settings(
        data_dir=Path(env["STORE_DATA_DIR"]),
        secret_key=env["STORE_SECRET_KEY"],
        database_url=env.get("STORE_DATABASE_URL"),
    )
    app = create_app(settings, migrate=False)
    if args.access_log != "off":
        import logging.config

        from store.observability.logging import log_config

        config = log_config(args.access_log)
        config["handlers"]["store"]["stream"] = open(os.devnull, "w")  # noqa: SIM115
        logging.config.dictConfig(config)
    query = b"service=store-registry&scope=repository%3Aacme%2Fapp%3Apull"
    auth = base64.b64encode(f"bob:{pull}".encode()).decode()

    calls = _count_statements() if args.backend == "postgresql" else None
    counted: list[float] = []  # statements per request, per batch

    async def measure() -> list[float]:
        inbox, task = await _lifespan(app)
        n = args.requests
        await _run(app, "/token", query, auth, 200, args.concurrency)  # warm up
        best = []
        for _ in range(args.repeats):
            before = calls[0] if calls else 0
            best.append(await _run(app, "/token", query, auth, n, args.concurrency))
            if calls:
                counted.append((calls[0] - before) / (n // args.concurrency * args.concurrency))
        await inbox.put({"type": "lifespan.shutdown"})
        await task
        return best

    load_before = loadavg()
    per_request = asyncio.run(measure())
    statements = ""
    if counted:
        statements = f"; statements per request {min(counted):.2f}-{max(counted):.2f}"
    print(
        f"store from {os.path.dirname(os.path.dirname(store.__file__))}, {args.backend},"
        f" concurrency {args.concurrency}, access log {args.access_log}:"
        f" /token (PAT) CPU per request, best of"
        f" {args.repeats} x {args.requests}: {min(per_request) * 1e6:.1f} µs"
        f" (all: {', '.join(f'{v * 1e6:.0f}' for v in per_request)}){statements};"
        f" load {load_before} -> {loadavg()}"
    )


if __name__ == "__main__":
    main()
