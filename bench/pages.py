"""Page render time: home, browse, product and search pages with the demo catalog.

    python bench/pages.py [--requests 300] [--warmup 30]

Builds a fresh SQLite store in a temporary directory, loads the demo catalog (`store demo
seed`), and times requests in-process against the ASGI app (Starlette's TestClient: no
network, so the figures are the server's own time: routing, queries, templates), round
robin over the pages so that they share the machine's conditions. A trivial JSON endpoint
added to the same app is the baseline. Prints p50/p95/p99 per page; the target is
p95 <= 30 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is bench/, whose modules (token.py...) would shadow the
# standard library: put the project root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
# ruff: noqa: E402

import argparse
import statistics
import tempfile
import time

from fastapi.testclient import TestClient

from store import demo, security
from store.app import create_app
from store.config import Settings
from store.db import session_scope

PAGES = {
    "ping (baseline)": "/bench/ping",
    "home": "/",
    "browse": "/browse",
    "browse (filtered)": "/browse?category=databases&pricing=free&sort=newest",
    "product": "/products/northwind/pgvault",
    "search": "/search?q=postgres",
}
TARGET_P95_MS = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=30, help="untimed requests per page")
    args = parser.parse_args()

    security.use_cheap_hashing_for_tests()  # seeding only: pages never hash passwords
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(tmp),
            secret_key="bench-secret-key-0123456789",
            environment="development",
        )
        app = create_app(settings, migrate=True)
        app.add_api_route("/bench/ping", lambda: {"ok": True})
        with session_scope(app.state.sessionmaker) as session:
            demo.seed(
                session,
                password="bench-password",
                registry_host="127.0.0.1:5000",
                settings=settings,
            )
        timings: dict[str, list[float]] = {name: [] for name in PAGES}
        headers = {"accept": "text/html"}
        with TestClient(app, base_url="http://127.0.0.1") as client:
            for _ in range(args.warmup):
                for path in PAGES.values():
                    assert client.get(path, headers=headers).status_code == 200, path
            for _ in range(args.requests):
                for name, path in PAGES.items():
                    start = time.perf_counter()
                    response = client.get(path, headers=headers)
                    timings[name].append((time.perf_counter() - start) * 1000)
                    assert response.status_code == 200, path
        app.state.engine.dispose()

    print(f"{'page':<20} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean':>8}")
    over = []
    for name, values in timings.items():
        p95 = percentile(values, 95)
        print(
            f"{name:<20} {len(values):>5} {percentile(values, 50):>8.2f} {p95:>8.2f} "
            f"{percentile(values, 99):>8.2f} {statistics.fmean(values):>8.2f}"
        )
        if name != "ping (baseline)" and p95 > TARGET_P95_MS:
            over.append(name)
    print(f"target p95 <= {TARGET_P95_MS:g} ms: " + ("met" if not over else f"NOT met: {over}"))
    return 0 if not over else 1


if __name__ == "__main__":
    raise SystemExit(main())
