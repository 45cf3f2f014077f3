"""A burst of bad credentials from one address, and what it does to everything else.

    python bench/guessing.py [--requests 80] [--workers 2] [--rounds 3]

Loopback only. Starts ``store serve --workers N`` on SQLite in a fresh data directory,
then per round sends ``--requests`` ``GET /token`` requests at once, each with random
Basic credentials (unknown users: one argon2id check against the constant hash each,
at production cost), from one address, while a probe asks ``/healthz`` every 10 ms.
Prints per round the answers by status, how many were checked (401s), the burst's
duration, ``/healthz`` p50/p99/max during the burst and p50/p99 of the same probe alone for
5 s just before (what the machine's own load does to it), and the workers' peak RSS (from
/proc), with the load average before and after. Each round uses an address of its own
(``X-Forwarded-For`` behind ``STORE_TRUSTED_PROXIES``), so the rounds do not share
counters. Exits 1 on any 5xx.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import argparse
import asyncio
import base64
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HOST = "127.0.0.1"
BASELINE_S = 5.0  # /healthz probed alone before each burst


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    """The resident memory of a process and its children, KiB (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


async def burst(base: str, count: int, address: str, pid: int) -> dict[str, object]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    done = asyncio.Event()
    health: list[float] = []
    peak = 0

    async def probe() -> None:
        nonlocal peak
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            while not done.is_set():
                started = time.perf_counter()
                await client.get("/healthz")
                health.append(time.perf_counter() - started)
                peak = max(peak, _rss_kib(pid))
                await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one() -> int:
            user, password = secrets.token_hex(6), secrets.token_hex(8)
            auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            r = await client.get(
                "/token?service=store-registry",
                headers={"Authorization": f"Basic {auth}", "X-Forwarded-For": address},
            )
            return r.status_code

        # The same probe alone first, for as long as the burst will take (about): what the
        # machine's own load does to /healthz, beside what the burst adds.
        prober = asyncio.create_task(probe())
        await asyncio.sleep(BASELINE_S)
        done.set()
        await prober
        quiet, health[:] = list(health), []
        done.clear()
        prober = asyncio.create_task(probe())
        started = time.perf_counter()
        statuses = await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
        done.set()
        await prober
    q = statistics.quantiles(health, n=100) if len(health) >= 2 else [0.0] * 99
    b = statistics.quantiles(quiet, n=100) if len(quiet) >= 2 else [0.0] * 99
    return {
        "quiet_healthz_p50_ms": round(b[49] * 1000, 1),
        "quiet_healthz_p99_ms": round(b[98] * 1000, 1),
        "statuses": dict(Counter(statuses)),
        "seconds": round(elapsed, 2),
        "healthz_n": len(health),
        "healthz_p50_ms": round(q[49] * 1000, 1),
        "healthz_p99_ms": round(q[98] * 1000, 1),
        "healthz_max_ms": round(max(health, default=0) * 1000, 1),
        "peak_rss_mib": round(peak / 1024),
    }


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guessing-") as tmp:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
        env.update(
            STORE_DATA_DIR=str(Path(tmp) / "data"),
            STORE_SECRET_KEY="bench-guessing-secret-0123456789",
            STORE_TRUSTED_PROXIES=HOST,
            STORE_ENVIRONMENT="test",
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", str(args.workers), "--log-level", "warning"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://{HOST}:{port}"
        try:
            deadline = time.monotonic() + 180  # a busy machine starts slowly
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        print("store serve did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.2)
            bad = False
            print(f"load average before: {_loadavg()}")
            for round_ in range(args.rounds):
                result = asyncio.run(burst(base, args.requests, f"10.9.0.{round_ + 1}", proc.pid))
                print(result)
                statuses = result["statuses"]
                assert isinstance(statuses, dict)
                bad = bad or any(int(s) >= 500 for s in statuses)
            print(f"load average after: {_loadavg()}")
            return 1 if bad else 0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
