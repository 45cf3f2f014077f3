"""SQLite full reindex: the one-transaction reindex (``indexer.reindex``) against the one
built beside the live index (``indexer.full_reindex``, also with the documents' values
bound in the reindexing process rather than in the workers), paired and interleaved on
the same data, with a writer committing a pull every 20 ms throughout.

    python bench/reindex_sqlite.py [--rows 20000] [--rounds 2] [--max-seconds 1200]

For each reindex (from an empty index, as the initial build): wall time, documents/s, the
reindexing thread's CPU per phase (``time.thread_time``), the worker processes' CPU
(``RUSAGE_CHILDREN``), and how long the writer's commits took (the longest is how long a
writer was blocked). The load average is printed with every figure: compare the ratios of
one run, not absolute figures across runs. Uses its own temporary SQLite file.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)
# ruff: noqa: E402

import argparse
import os
import random
import resource
import signal
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

import store.search  # noqa: F401  (the index listeners)
from bench.search import generate, load
from store import migrate
from store.db import DatabaseBusy, make_engine, make_sessionmaker, session_scope
from store.registry import hub
from store.search import indexer
from store.search.documents import read_documents
from store.search.sqlite_fts import SqliteBackend


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def empty_index(engine: Engine) -> None:
    """No documents and empty full-text tables (without deleting row by row)."""
    with engine.begin() as conn:
        ddl = [
            str(r[0])
            for r in conn.execute(
                text(
                    "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
                    "('search_fts_insert', 'search_fts_delete', 'search_fts_update')"
                )
            )
        ]
        for name in ("search_fts_insert", "search_fts_delete", "search_fts_update"):
            conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        conn.execute(text("DELETE FROM search_documents"))
        for table in ("search_fts", "search_fts_head"):
            conn.execute(text(f"INSERT INTO {table}({table}) VALUES ('delete-all')"))  # noqa: S608
        conn.execute(text("DELETE FROM search_fts_facets"))
        for statement in ddl:
            conn.execute(text(statement))


class Writer:
    """A pull committed every 20 ms in a thread of its own; each commit's duration."""

    def __init__(self, engine: Engine, names: list[str]) -> None:
        self.factory = make_sessionmaker(engine)
        self.names = names
        self.stop = threading.Event()
        self.waits: list[float] = []
        self.busy = 0
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        rng = random.Random(5)
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                with session_scope(self.factory) as session:
                    hub.record_pull(session, name=rng.choice(self.names), at=datetime.now(UTC))
            except DatabaseBusy:
                self.busy += 1
            self.waits.append(time.perf_counter() - started)
            time.sleep(0.02)

    @contextmanager
    def running(self) -> Iterator[None]:
        self.thread.start()
        try:
            yield
        finally:
            self.stop.set()
            self.thread.join()


def timed_phases(monkey: list[tuple[Any, str, Any]]) -> dict[str, float]:
    """Patch the phases' functions to add their thread CPU into the returned dict."""
    phases: dict[str, float] = defaultdict(float)
    step = indexer._step

    def timed_step(engine: Engine, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return step(engine, fn, *args)
        finally:
            phases[fn.__name__] += time.thread_time() - t0

    rebuild = SqliteBackend.rebuild

    def timed_rebuild(self: SqliteBackend, conn: Any, pool: Any = None) -> None:
        t0 = time.thread_time()
        try:
            rebuild(self, conn, pool)
        finally:
            phases["rebuild (FTS5 'rebuild')"] += time.thread_time() - t0

    for owner, name, value in (
        (indexer, "_step", timed_step),
        (SqliteBackend, "rebuild", timed_rebuild),
    ):
        monkey.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)
    return phases


def one(engine: Engine, how: str, names: list[str]) -> dict[str, Any]:
    empty_index(engine)
    monkey: list[tuple[Any, str, Any]] = []
    phases = timed_phases(monkey)
    writer = Writer(engine, names)
    try:
        children = _children_cpu()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        with writer.running():
            if how == "one transaction":
                with engine.begin() as conn:
                    counts = indexer.reindex(conn, committed=True)
            elif how == "beside, values bound here":
                # The workers return documents only; this process binds their values.
                bound = indexer.read_bound_documents
                indexer.read_bound_documents = read_documents  # type: ignore[assignment]
                try:
                    counts = indexer.full_reindex(engine)
                finally:
                    indexer.read_bound_documents = bound  # type: ignore[assignment]
            else:
                counts = indexer.full_reindex(engine)
        wall = time.perf_counter() - wall0
        cpu = time.thread_time() - cpu0
    finally:
        for owner, name, value in monkey:
            setattr(owner, name, value)
    docs = counts["store"] + counts["hub"]
    waits = sorted(writer.waits)
    return {
        "how": how,
        "docs": docs,
        "wall": wall,
        "rate": docs / wall,
        "cpu": cpu,
        "workers": _children_cpu() - children,
        "phases": dict(phases),
        "commits": len(waits),
        "busy": writer.busy,
        "max_wait": waits[-1] if waits else 0.0,
        "p50_wait": waits[len(waits) // 2] if waits else 0.0,
        "load": _load(),
    }


def _timeout(_signum: int, _frame: Any) -> None:
    raise SystemExit("bench/reindex_sqlite.py: --max-seconds exceeded, stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-seconds", type=int, default=1200)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(args.max_seconds)
    data = generate(args.rows)
    names = [r["name"] for r in data["repos"][:500]]
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        engine = make_engine(f"sqlite:///{os.path.join(tmp, 'bench.db')}")
        try:
            migrate.upgrade(engine)
            load(engine, data)
            print(f"{args.rows:,} entries loaded ({_load()})", flush=True)
            order = ["one transaction", "beside, values bound here", "beside"]
            for round_ in range(args.rounds):
                for how in order if round_ % 2 == 0 else order[::-1]:
                    r = one(engine, how, names)
                    phases = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["phases"].items()))
                    print(
                        f"round {round_ + 1} {r['how']}: {r['docs']:,} documents in "
                        f"{r['wall']:.1f} s ({r['rate']:,.0f}/s); CPU reindexing thread "
                        f"{r['cpu']:.2f} s [{phases}], workers {r['workers']:.2f} s; writer: "
                        f"{r['commits']} commits, longest {r['max_wait'] * 1000:,.0f} ms, "
                        f"median {r['p50_wait'] * 1000:,.1f} ms, {r['busy']} DatabaseBusy "
                        f"({r['load']})",
                        flush=True,
                    )
        finally:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
