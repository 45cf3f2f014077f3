"""Benchmark of the registry token endpoint against a trivial endpoint of the same app.

    python bench/token.py [--backend sqlite|postgresql|both] [--seconds 8] [--connections 32]

Starts the store under uvicorn (2 workers, httptools + uvloop) on a free 127.0.0.1 port with
a fresh database, seeds a publisher, a paid product and an entitled customer, then measures
interleaved rounds with a keep-alive asyncio load generator running on the same machine:

- ``ping``: ``GET /bench/ping``, a FastAPI JSON endpoint added to the same app (the floor);
- ``token-pat``: ``GET /token`` for an entitled pull, Basic auth with a personal access token;
- ``token-password``: the same with username + password (argon2id at production cost; the
  first check per worker is real, the rest hit the credential cache).

Prints requests/s and p50/p99 per case and the ratios the issue sets targets for
(token-pat ≥ 0.5 x ping; token-password ≥ 0.8 x token-pat).
"""

# ruff: noqa: E402  (sys.path is fixed before the imports; see below)
from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path and this file would shadow the
# standard library's `token` module: drop it before anything imports `tokenize`.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import base64
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
PASSWORD = "bench password 123"


def make_app() -> Any:
    """The store app plus a trivial JSON endpoint (uvicorn factory)."""
    from store.app import create_app

    app = create_app()

    @app.get("/bench/ping")
    def ping() -> dict[str, bool]:
        return {"ok": True}

    return app


# --- setup --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_pg_database(name: str) -> str:
    from sqlalchemy import text

    from store.db import make_engine

    admin = make_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str) -> None:
    from sqlalchemy import text

    from store.db import make_engine

    admin = make_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def seed(env: dict[str, str]) -> str:
    """Migrate and seed; returns bob's personal access token."""
    from store import migrate
    from store.accounts import service as accounts
    from store.catalog import service as catalog
    from store.config import Settings
    from store.db import make_engine, make_sessionmaker, session_scope
    from store.keys import service as keys
    from store.licensing import entitlements

    settings = Settings(
        data_dir=Path(env["STORE_DATA_DIR"]),
        database_url=env.get("STORE_DATABASE_URL"),
        secret_key=env["STORE_SECRET_KEY"],
    )
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        alice = accounts.create_account(
            session, username="alice", email="alice@example.com", password=PASSWORD
        )
        bob = accounts.create_account(
            session, username="bob", email="bob@example.com", password=PASSWORD
        )
        acme = accounts.create_organization(session, owner=alice, slug="acme", name="Acme")
        product = catalog.create_product(
            session, actor=alice, org=acme, kind="image", slug="app", title="App"
        )
        tier = catalog.create_tier(
            session,
            actor=alice,
            product=product,
            slug="pro",
            name="Pro",
            billing="month",
            amount_minor=4900,
        )
        session.refresh(product)
        catalog.set_status(session, actor=alice, product=product, status="published")
        entitlements.grant(session, actor=alice, tier=tier, account=bob)
        keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
        secret = accounts.create_token(
            session, kind="personal", name="bench", scopes=["pull"], created_by=bob
        ).secret
    engine.dispose()
    return secret


# --- load generator --------------------------------------------------------------------------


class RequestsFailed(Exception):
    """Some requests did not answer 200: the server log says why."""


async def _worker(
    port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _load(port: int, request: bytes, seconds: float, connections: int) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(
        *(_worker(port, request, stop_at, latencies, errors) for _ in range(connections))
    )
    elapsed = time.perf_counter() - start
    latencies.sort()
    if errors:
        raise RequestsFailed(f"{len(errors)} requests failed (status {errors[0]})")
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "n": len(latencies),
    }


def _request(path: str, auth: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: bench"]
    if auth:
        lines.append(f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def run_backend(
    backend: str, seconds: float, connections: int, rounds: int
) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-token-{backend}-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.update(
        STORE_DATA_DIR=str(tmp / "data"),
        STORE_SECRET_KEY="bench-secret-0123456789abcdef",
        STORE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        PYTHONPATH=str(ROOT),
    )
    pg_name = f"store_bench_{os.getpid()}"
    if backend == "postgresql":
        env["STORE_DATABASE_URL"] = create_pg_database(pg_name)
    pat = seed(env)
    log = open(tmp / "uvicorn.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.token:make_app",
            "--factory",
            "--workers",
            "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--http",
            "httptools",
            "--loop",
            "uvloop",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(port, server)
        scope = "service=store-registry&scope=repository%3Aacme%2Fapp%3Apull"
        cases = {
            "ping": _request("/bench/ping"),
            "token-pat": _request(f"/token?{scope}", f"bob:{pat}"),
            "token-password": _request(f"/token?{scope}", f"bob:{PASSWORD}"),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        try:
            for request in cases.values():  # warm up: connections, caches, first argon2
                asyncio.run(_load(port, request, 1.0, connections))
            for _ in range(rounds):
                for name, request in cases.items():
                    results[name].append(asyncio.run(_load(port, request, seconds, connections)))
        except RequestsFailed as exc:
            log.flush()
            tail = (tmp / "uvicorn.log").read_text(errors="replace")[-6000:]
            raise SystemExit(
                f"{backend}: {exc}\n--- server log kept at {tmp / 'uvicorn.log'}, tail:\n{tail}"
            ) from None
        return {name: _median(runs) for name, runs in results.items()}
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        log.close()
        if backend == "postgresql":
            drop_pg_database(pg_name)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def _wait(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("uvicorn exited; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("uvicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians are printed"
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(f"load average before: {_loadavg()}")
    for backend in backends:
        res = run_backend(backend, args.seconds, args.connections, args.rounds)
        print(f"\n{backend}: 2 workers, {args.connections} connections, ", end="")
        print(f"{args.rounds} interleaved rounds of {args.seconds:.0f} s (medians)")
        print(f"{'case':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for name, r in res.items():
            print(f"{name:<16}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}")
        pat_ratio = res["token-pat"]["rps"] / res["ping"]["rps"]
        password_ratio = res["token-password"]["rps"] / res["token-pat"]["rps"]
        print(f"ratio token-pat / ping           = {pat_ratio:.2f}  (target >= 0.50)")
        print(f"ratio token-password / token-pat = {password_ratio:.2f}  (target >= 0.80)")
        print(f"load average after: {_loadavg()}")


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
