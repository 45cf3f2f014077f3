"""The registry token endpoint and the store's plainest endpoint against bare Starlette.

    python bench/token.py [--backend sqlite|postgresql|both] [--seconds 8] [--rounds 3]
                          [--connections 32] [--client auto|wrk|python]

Loopback only. Starts two servers side by side on free 127.0.0.1 ports, both with 2
workers, httptools and uvloop:

- ``hello``: a bare Starlette app answering ``GET /`` with "Hello, world!" (the floor:
  what uvicorn and Starlette cost with nothing of the store's);
- the store as production runs it: ``store serve --workers 2`` (its header deadline, its
  request middleware, the access log at INFO to a file, multi-process metrics) on a fresh
  database (SQLite, or a new PostgreSQL database dropped afterwards), seeded with a
  publisher, a paid product and an entitled customer.

Then it measures interleaved rounds (one after the other, each ``--seconds`` long, the same
order every round; medians printed) with ``wrk`` (the Debian package; the asyncio client of
this file when wrk is missing, which then limits the hello case itself):

- ``hello``: ``GET /`` on the bare app;
- ``healthz``: ``GET /healthz`` on the store (a plain route, no database);
- ``token-pat``: ``GET /token`` for an entitled pull, Basic auth with a personal access
  token (one statement, ES256 signing);
- ``token-password``: the same with username + password (argon2id at production cost; the
  password cache is warmed before each round by a few requests two at a time, so every
  measured request is a cache hit: the path a CI fleet takes after its first pull. Fifty
  identical requests at once on a cold cache would reserve fifty attempts of the
  account's limit of twenty and be refused, as they should be).

Prints requests/s and p50/p99 per case, the ratios the targets are set for (healthz ≥ 0.5 x
hello, token-pat ≥ 0.3 x hello, token-pat p99 ≤ 12 ms, token-password ≥ 0.8 x token-pat),
the store workers' RSS after the load (and a few ``/readyz`` probes, as a load balancer
sends) and the load average before and after. If a request
fails it stops, keeps the server log and prints its tail.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports; see below)
from __future__ import annotations

import os
import sys

# Run as a script, this directory comes first on sys.path and this file would shadow the
# standard library's `token` module: drop it before anything imports `tokenize`.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench._common

import argparse
import asyncio
import base64
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    PASSWORD,
    ROOT,
    create_pg_database,
    drop_pg_database,
    free_port,
    loadavg,
    percentile,
    seed_shop,
    store_env,
)

START_TIMEOUT = 180.0  # seconds for a server to answer (a busy machine starts slowly)


def hello_app() -> Any:
    """The floor: a bare Starlette app (uvicorn factory)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("Hello, world!")

    return Starlette(routes=[Route("/", hello)])


# --- setup --------------------------------------------------------------------------------


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
        "p99": percentile(latencies, 99) * 1000,
        "n": len(latencies),
    }


def _request(path: str, auth: str | None = None, *, close: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "User-Agent: bench"]
    if close:
        lines.append("Connection: close")
    if auth:
        lines.append(f"Authorization: Basic {base64.b64encode(auth.encode()).decode()}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Server:
    """A server process on a loopback port, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, port: int, path: str) -> None:
        """Until ``path`` answers 200 (START_TIMEOUT at most)."""
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(request.encode())
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(
            f"{self.name} did not answer in {START_TIMEOUT:.0f} s; see {self.log_path}"
        )

    def worker_rss_mib(self) -> list[float]:
        """The resident memory of each worker process, MiB (uvicorn's children but the
        small process multiprocessing keeps for its semaphores)."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        sizes = []
        for child in children:
            try:
                if b"resource_tracker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    continue
            except OSError:
                continue
            try:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        sizes.append(int(line.split()[1]) / 1024)
            except OSError:
                pass
        return sizes

    def tail(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@dataclass
class Case:
    name: str
    port: int
    path: str
    auth: str | None = None


def uvicorn_argv(target: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", target, "--factory", "--workers", "2",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--log-level", "warning", "--http", "httptools", "--loop", "uvloop",
    ]  # fmt: skip


def run_backend(
    backend: str, seconds: float, connections: int, rounds: int, client: str
) -> tuple[dict[str, dict[str, float]], list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-token-{backend}-"))
    hello_port, store_port = free_port(), free_port()
    env = store_env(tmp / "data", "bench-secret-0123456789abcdef", store_port)
    pg_name = f"store_bench_{os.getpid()}"
    if backend == "postgresql":
        env["STORE_DATABASE_URL"] = create_pg_database(pg_name)
    _, pat = seed_shop(env, key_purposes=("registry",))
    hello = Server(
        "hello", uvicorn_argv("bench.token:hello_app", hello_port), env, tmp / "hello.log"
    )
    store = Server(
        "store serve",
        [
            sys.executable,
            "-m",
            "store.cli.main",
            "serve",
            "--workers",
            "2",
            "--port",
            str(store_port),
        ],
        env,
        tmp / "store.log",
    )
    try:
        hello.wait_ready(hello_port, "/")
        store.wait_ready(store_port, "/healthz")
        query = "service=store-registry&scope=repository%3Aacme%2Fapp%3Apull"
        cases = [
            Case("hello", hello_port, "/"),
            Case("healthz", store_port, "/healthz"),
            Case("token-pat", store_port, f"/token?{query}", f"bob:{pat}"),
            Case("token-password", store_port, f"/token?{query}", f"bob:{PASSWORD}"),
        ]
        load = _wrk if client == "wrk" else _python_load
        results: dict[str, list[dict[str, float]]] = {case.name: [] for case in cases}
        try:
            for case in cases:  # warm up: connections, caches, imports
                _warm(case)
                load(case, 1.0, connections)
            for _ in range(rounds):
                for case in cases:
                    _warm(case)
                    results[case.name].append(load(case, seconds, connections))
        except RequestsFailed as exc:
            raise SystemExit(
                f"{backend}: {exc}\n--- server log kept at {store.log_path}, tail:\n{store.tail()}"
            ) from None
        for _ in range(4):  # as a load balancer's readiness probes would, on both workers
            store.wait_ready(store_port, "/readyz")
        rss = store.worker_rss_mib()
        return {name: _median(runs) for name, runs in results.items()}, rss
    finally:
        hello.stop()
        store.stop()
        if backend == "postgresql":
            drop_pg_database(pg_name)


def _warm(case: Case) -> None:
    """A few requests two at a time, each on a connection of its own (so both workers
    get some): the password case's credential is then in both workers' caches."""
    if case.auth is None or case.auth.partition(":")[2] != PASSWORD:
        return

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", case.port)
        try:
            writer.write(_request(case.path, case.auth, close=True))
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.read()
        finally:
            writer.close()
        if head[9:12] != b"200":
            raise RequestsFailed(f"warm-up of {case.name}: status {head[9:12].decode()}")

    async def warm() -> None:
        for _ in range(8):
            await asyncio.gather(one(), one())

    asyncio.run(warm())


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_PCT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_REQUESTS = re.compile(r"(\d+) requests in")
_WRK_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(case: Case, seconds: float, connections: int) -> dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    argv += ["-H", "User-Agent: bench"]
    if case.auth:
        argv += ["-H", f"Authorization: Basic {base64.b64encode(case.auth.encode()).decode()}"]
    argv.append(f"http://127.0.0.1:{case.port}{case.path}")
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    bad = _WRK_BAD.search(out)
    if bad:
        raise RequestsFailed(f"{case.name}: {bad.group(1)} requests did not answer 2xx")
    sock = _WRK_SOCKET.search(out)
    if sock and any(int(n) for n in sock.groups()[1:]):
        raise RequestsFailed(f"{case.name}: {sock.group(0)}")
    rps, pct, n = (
        _WRK_RPS.search(out),
        dict((p, float(v) * _UNIT_MS[u]) for p, v, u in _WRK_PCT.findall(out)),
        _WRK_REQUESTS.search(out),
    )
    if rps is None or n is None or set(pct) != {"50", "99"}:
        raise SystemExit(f"cannot read wrk's output:\n{out}")
    return {"rps": float(rps.group(1)), "p50": pct["50"], "p99": pct["99"], "n": float(n.group(1))}


def _python_load(case: Case, seconds: float, connections: int) -> dict[str, float]:
    return asyncio.run(_load(case.port, _request(case.path, case.auth), seconds, connections))


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians are printed"
    )
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    if client == "python":
        print("wrk not found: the asyncio client limits the hello case, ratios are understated")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(f"load average before: {loadavg()}")
        res, rss = run_backend(backend, args.seconds, args.connections, args.rounds, client)
        print(f"\n{backend}: 2 workers each, {client}, {args.connections} connections, ", end="")
        print(f"{args.rounds} interleaved rounds of {args.seconds:.0f} s (medians)")
        print(f"{'case':<16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
        for name, r in res.items():
            print(f"{name:<16}{r['rps']:>10.0f}{r['p50']:>10.2f}{r['p99']:>10.2f}")
        hello = res["hello"]["rps"]
        lines = [
            ("ratio healthz / hello", res["healthz"]["rps"] / hello, ">= 0.50"),
            ("ratio token-pat / hello", res["token-pat"]["rps"] / hello, ">= 0.30"),
            ("token-pat p99 (ms)", res["token-pat"]["p99"], "<= 12"),
            (
                "ratio token-password / token-pat",
                res["token-password"]["rps"] / res["token-pat"]["rps"],
                ">= 0.80",
            ),
        ]
        for label, value, target in lines:
            print(f"{label:<33}= {value:5.2f}  (target {target})")
        sizes = ", ".join(f"{mib:.0f}" for mib in rss)
        print(f"store worker RSS after the load  = {sizes} MiB  (target <= 120 each)")
        print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
