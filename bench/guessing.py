"""A burst of bad credentials from one address, and what it does to everything else.

    python bench/guessing.py [--requests 80] [--workers 2] [--rounds 3] [--baseline DIR]

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

The probe is a process of its own (a keep-alive HTTP/1.1 connection from the standard
library), as a load balancer's health check is: sending 80 requests at once stalls the
burst's own event loop by up to a couple of hundred milliseconds on this machine, and a
probe on that loop would measure the stall (``client_lag_max_ms`` says how long it was).

``--baseline DIR`` starts a second server beside the first, importing the ``store``
package from ``DIR`` (e.g. an unpacked ``git archive`` of an earlier commit), and
alternates the rounds between the two (the order swapped every round), so old and new are
compared in the same minutes of the machine's load.
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
import http.client
import json
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"
BASELINE_S = 5.0  # /healthz probed alone before each burst
PROBE_EVERY_S = 0.01


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


# --- the probe (a process of its own) --------------------------------------------------------


def probe_main(port: int) -> int:
    """``--probe PORT``: ask /healthz every 10 ms until stdin closes, then print the
    latencies (seconds, JSON) and the number of answers that were not 200."""
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    samples: list[float] = []
    bad = 0
    print("ready", flush=True)
    while not stop.is_set():
        started = time.perf_counter()
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        samples.append(time.perf_counter() - started)
        bad += response.status != 200
        time.sleep(PROBE_EVERY_S)
    conn.close()
    print(json.dumps({"samples": samples, "bad": bad}), flush=True)
    return 0


@contextmanager
def probing(port: int) -> Iterator[dict[str, Any]]:
    """A probe process for the duration of the block; its results in the yielded dict."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--probe", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    result: dict[str, Any] = {}
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the /healthz probe did not start")
        yield result
    finally:
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(30)
    result.update(json.loads(out))


def _quantiles(samples: list[float]) -> list[float]:
    return statistics.quantiles(samples, n=100) if len(samples) >= 2 else [0.0] * 99


# --- one burst -------------------------------------------------------------------------------


async def _burst(base: str, count: int, address: str, pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    done = asyncio.Event()
    lags: list[float] = []
    peak = 0

    async def watch() -> None:
        # The RSS peak, and how late this loop wakes up (the load generator's own stall).
        nonlocal peak
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - started - 0.005)
            peak = max(peak, _rss_kib(pid))

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def one() -> int:
            user, password = secrets.token_hex(6), secrets.token_hex(8)
            auth = base64.b64encode(f"{user}:{password}".encode()).decode()
            r = await client.get(
                "/token?service=store-registry",
                headers={"Authorization": f"Basic {auth}", "X-Forwarded-For": address},
            )
            return r.status_code

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        statuses = await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
        done.set()
        await watcher
    return {
        "statuses": dict(Counter(statuses)),
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(peak / 1024),
        "client_lag_max_ms": round(max(lags, default=0) * 1000, 1),
    }


def burst(base: str, port: int, count: int, address: str, pid: int) -> dict[str, Any]:
    # The same probe alone first, for about as long as the burst will take: what the
    # machine's own load does to /healthz, beside what the burst adds.
    with probing(port) as quiet:
        time.sleep(BASELINE_S)
    with probing(port) as during:
        result = asyncio.run(_burst(base, count, address, pid))
    q, b = _quantiles(during["samples"]), _quantiles(quiet["samples"])
    return {
        "quiet_healthz_p50_ms": round(b[49] * 1000, 1),
        "quiet_healthz_p99_ms": round(b[98] * 1000, 1),
        **result,
        "healthz_n": len(during["samples"]),
        "healthz_not_200": during["bad"] + quiet["bad"],
        "healthz_p50_ms": round(q[49] * 1000, 1),
        "healthz_p99_ms": round(q[98] * 1000, 1),
        "healthz_max_ms": round(max(during["samples"], default=0) * 1000, 1),
    }


# --- the servers ------------------------------------------------------------------------------


@contextmanager
def serving(workers: int, source: str | None) -> Iterator[tuple[str, int, int]]:
    """``store serve`` on a fresh SQLite store: (base URL, port, pid); ``source``: the
    directory the ``store`` package is imported from (None: the installed one)."""
    with tempfile.TemporaryDirectory(prefix="bench-guessing-") as tmp:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
        env.update(
            STORE_DATA_DIR=str(Path(tmp) / "data"),
            STORE_SECRET_KEY="bench-guessing-secret-0123456789",
            STORE_TRUSTED_PROXIES=HOST,
            STORE_ENVIRONMENT="test",
        )
        if source:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (source, env.get("PYTHONPATH"))))
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", str(workers), "--log-level", "warning"],
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
                        raise RuntimeError("store serve did not start") from None
                    time.sleep(0.2)
            yield base, port, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="a directory holding an earlier `store` package")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe_main(args.probe)
    names = ["new", "baseline"] if args.baseline else ["new"]
    with serving(args.workers, None) as new:
        servers = {"new": new}
        baseline = serving(args.workers, args.baseline) if args.baseline else None
        with baseline if baseline is not None else _nothing() as old:
            if old is not None:
                servers["baseline"] = old
            bad = False
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
            print(f"load average before: {_loadavg()}")
            for round_ in range(args.rounds):
                order = names if round_ % 2 == 0 else names[::-1]
                for name in order:
                    base, port, pid = servers[name]
                    address = f"10.9.{names.index(name)}.{round_ + 1}"
                    result = burst(base, port, args.requests, address, pid)
                    results[name].append(result)
                    print({"server": name, **result}, flush=True)
                    bad = bad or any(int(s) >= 500 for s in result["statuses"])
                    bad = bad or bool(result["healthz_not_200"])
            print(f"load average after: {_loadavg()}")
            for name in names:
                p99 = [r["healthz_p99_ms"] for r in results[name]]
                quiet = [r["quiet_healthz_p99_ms"] for r in results[name]]
                print(
                    f"{name}: /healthz p99 in the burst, median of rounds "
                    f"{statistics.median(p99):.1f} ms (alone {statistics.median(quiet):.1f} ms)"
                )
            return 1 if bad else 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
