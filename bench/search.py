"""Search benchmark: build N entries (listings + hub repositories), time the index build and
queries of each class on SQLite FTS5 and PostgreSQL, next to an unindexed LIKE scan.

    python bench/search.py [--rows 200000] [--backend sqlite|postgresql|both]
                           [--queries 200] [--pg-url postgresql://postgres@127.0.0.1:5432/test]
                           [--max-seconds 3600]

Creates its own temporary SQLite file and its own PostgreSQL database, and drops both.
Every timed query is a full ``store.search.service.search`` call as an anonymous visitor:
tiered ranking, exact-name lookup, facet counts and loading the page of documents.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, sys.path[0] is bench/, whose modules (token.py...) would shadow the
# standard library: put the project root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
# ruff: noqa: E402

import argparse
import itertools
import os
import random
import signal
import string
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import store.models
import store.search  # noqa: F401
from store import migrate
from store.accounts.models import Organization
from store.catalog.models import Category, Product, Tier, product_categories
from store.db import make_engine
from store.registry.models import HubRepository
from store.search import indexer, service

TECH = (
    "redis postgres mysql mariadb mongo nginx apache caddy traefik envoy haproxy node python "
    "golang rust java ruby php dotnet alpine debian ubuntu busybox kafka rabbitmq nats zookeeper "
    "elasticsearch opensearch kibana grafana prometheus loki tempo jaeger vault consul etcd minio "
    "ceph jenkins gitlab gitea drone argo flux helm kubectl terraform ansible packer docker "
    "compose registry proxy cache queue stream search metrics logging tracing backup restore "
    "database server client agent operator exporter gateway worker scheduler runner builder "
    "cli sdk api web ui dashboard monitor scanner firewall vpn dns ldap oauth sso auth keycloak "
    "wordpress drupal ghost nextcloud jupyter spark flink airflow superset metabase clickhouse "
    "timescale influx cassandra couchdb neo4j memcached valkey sentinel cluster ha lite slim"
).split()
ENGLISH = (
    "the a an and or of to in for with on by from fast small secure simple open source "
    "production ready lightweight high performance scalable distributed reliable easy "
    "official community image container plugin service application tool platform based "
    "built using runs supports configuration data storage network file system memory disk "
    "version release stable latest update patch build test deploy manage monitor collect "
    "store serve handle process analyze visualize query index cache replicate sync"
).split()
CATEGORIES = (
    "databases monitoring security networking devops ci-cd storage messaging analytics "
    "languages web-servers operating-systems machine-learning developer-tools observability"
).split()
PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7", "windows/amd64", "linux/s390x"]


def zipf_words(rng: random.Random, vocab: list[str], cum: list[float], n: int) -> list[str]:
    return rng.choices(vocab, cum_weights=cum, k=n)


def generate(rows: int, seed: int = 7) -> dict[str, Any]:
    """Orgs, products (10 % of rows) with tiers and categories, and hub repositories."""
    rng = random.Random(seed)
    synthetic = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9))) for _ in range(20000)
    ]
    vocab = TECH + ENGLISH + synthetic
    weights = [1 / (i + 1) ** 1.05 for i in range(len(vocab))]
    rng.shuffle(weights)  # tech words are not systematically the most frequent
    cum = list(itertools.accumulate(weights))
    now = datetime.now(UTC)
    n_orgs = max(10, rows // 100)
    orgs = [
        {
            "id": uuid.uuid4(),
            "slug": f"{rng.choice(TECH)}{rng.choice(synthetic)[:5]}{i}",
            "name": f"{rng.choice(synthetic).title()} {rng.choice(['Inc', 'Labs', 'Corp'])}",
            "description": "",
            "website": "",
            "created_at": now,
            "verified_at": now if rng.random() < 0.1 else None,
            "verification_note": "",
        }
        for i in range(n_orgs)
    ]
    products, tiers, cats, repos = [], [], [], []
    df: Counter[str] = Counter()
    n_products = rows // 10
    for i in range(rows):
        org = orgs[rng.randrange(n_orgs)]
        base = "-".join(rng.sample(TECH, rng.choice([1, 1, 2, 2, 3])))
        name = f"{org['slug']}/{base}-{i}" if rng.random() < 0.7 else f"{org['slug']}/{base}{i}"
        words = zipf_words(rng, vocab, cum, rng.randint(12, 60))
        summary = " ".join(words[:12]).capitalize()
        description = " ".join(words)
        df.update(set(name.replace("/", " ").replace("-", " ").split()) | set(words))
        pulls = int(rng.paretovariate(0.8) * 10) if rng.random() < 0.8 else 0
        if i < n_products:
            pid = uuid.uuid4()
            products.append(
                {
                    "id": pid,
                    "organization_id": org["id"],
                    "kind": "plugin" if rng.random() < 0.15 else "image",
                    "slug": name.split("/", 1)[1],
                    "repository": name,
                    "title": " ".join(w.title() for w in base.split("-")) + f" {i}",
                    "summary": summary,
                    "description_md": description,
                    "logo_url": "",
                    "platforms": rng.sample(PLATFORMS, rng.randint(1, 3)),
                    "docs_url": "",
                    "support_url": "",
                    "eula_url": "",
                    "status": "published" if rng.random() < 0.95 else "draft",
                    "status_reason": "",
                    "official": rng.random() < 0.02,
                    "certified_at": now if rng.random() < 0.05 else None,
                    "created_at": now,
                    "updated_at": now,
                    "published_at": now,
                }
            )
            billing = rng.choice(["free", "free", "month", "year", "one_time"])
            tiers.append(
                {
                    "id": uuid.uuid4(),
                    "product_id": pid,
                    "slug": "main",
                    "name": "Main",
                    "description": "",
                    "billing": billing,
                    "amount_minor": 0 if billing == "free" else rng.randint(500, 50000),
                    "currency": "usd",
                    "trial_days": 14 if rng.random() < 0.2 else 0,
                    "seats": None,
                    "features": [],
                    "active": True,
                    "public": billing == "free",
                    "sort_order": 0,
                    "gateway_price_ref": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for slug in rng.sample(CATEGORIES, rng.randint(1, 2)):
                cats.append({"product_id": pid, "category_slug": slug})
        else:
            repos.append(
                {
                    "id": uuid.uuid4(),
                    "name": name,
                    "namespace": org["slug"],
                    "description": description,
                    "private": rng.random() < 0.05,
                    "pull_count": pulls,
                    "star_count": pulls // 100,
                    "created_at": now - timedelta(days=rng.randint(0, 1500)),
                    "last_pushed_at": now - timedelta(days=rng.randint(0, 900)),
                    "last_pulled_at": None,
                }
            )
    return {
        "orgs": orgs,
        "products": products,
        "tiers": tiers,
        "cats": cats,
        "repos": repos,
        "df": df,
        "rows": rows,
    }


def load(engine: Engine, data: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(
            Category.__table__.insert(),
            [{"slug": c, "name": c.replace("-", " ").title()} for c in CATEGORIES],
        )
        for table, key in (
            (Organization.__table__, "orgs"),
            (Product.__table__, "products"),
            (Tier.__table__, "tiers"),
            (product_categories, "cats"),
            (HubRepository.__table__, "repos"),
        ):
            rows = data[key]
            for start in range(0, len(rows), 5000):
                conn.execute(table.insert(), rows[start : start + 5000])


def pick_terms(df: Counter[str], rows: int, rng: random.Random) -> dict[str, list[str]]:
    by_share = sorted(df.items(), key=lambda kv: -kv[1])

    def near(share: float, k: int) -> list[str]:
        ranked = sorted(by_share[:5000], key=lambda kv: abs(kv[1] / rows - share))
        return [w for w, _ in ranked[:k] if len(w) >= 3]

    frequent = near(0.10, 10)
    mid = near(0.01, 20)
    rare = [w for w, n in by_share if 2 <= n <= 20 and len(w) >= 4][:2000]
    one = frequent + mid + rng.sample(rare, 20)
    two = [f"{rng.choice(frequent + mid)} {rng.choice(frequent + mid)}" for _ in range(40)]
    prefixes = [w[:2] for w in frequent + mid] + [w[:3] for w in frequent + mid]
    # Other forms of indexed words, found through their English stem ("gulvjts" and
    # "gulvjting" find "gulvjt"), the last one also as a prefix.
    inflected = [w + rng.choice(("s", "ing", "ed")) for w in frequent + mid]
    return {
        "inflected": inflected,
        "frequent": frequent,
        "one": one,
        "two": two,
        "prefix": prefixes,
        "top": [by_share[0][0]],
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    fn()  # warm
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "n": n,
    }


def run_queries(engine: Engine, terms: dict[str, list[str]], n: int, rng: random.Random) -> dict:
    out: dict[str, dict[str, float]] = {}
    with Session(engine) as session:

        def search(q: str, **kw: Any) -> Callable[[], Any]:
            filters = service.make_filters(**kw.pop("filters", {}))
            return lambda: service.search(session, q=q, filters=filters, **kw)

        def cycle(make: Callable[[], Callable[[], Any]]) -> Callable[[], Any]:
            return lambda: make()()

        classes = {
            "one-term": lambda: search(rng.choice(terms["one"])),
            "frequent term": lambda: search(rng.choice(terms["frequent"])),
            "two-term": lambda: search(rng.choice(terms["two"])),
            "inflected form (stem)": lambda: search(rng.choice(terms["inflected"])),
            "prefix (2-3 chars)": lambda: search(rng.choice(terms["prefix"]), as_you_type=True),
            "faceted": lambda: search(
                rng.choice(terms["one"]),
                filters={"category": rng.choice(CATEGORIES), "pricing": "free"},
            ),
            "faceted, no words": lambda: search(
                "",
                filters={
                    "kind": rng.choice(["image", "plugin"]),
                    "category": rng.choice(CATEGORIES),
                },
            ),
            "page 10 of a frequent term": lambda: search(rng.choice(terms["frequent"]), page=10),
        }
        for name, make in classes.items():
            out[name] = timed(cycle(make), n)
        like_n = max(5, n // 20)
        conn = session.connection()

        def like() -> Any:
            pattern = f"%{rng.choice(terms['frequent'] + terms['one'])}%"
            return conn.execute(
                text(
                    "SELECT id FROM search_documents WHERE name LIKE :p OR title LIKE :p "
                    "OR summary LIKE :p OR fts_body LIKE :p ORDER BY id LIMIT 25"
                ),
                {"p": pattern},
            ).all(), conn.execute(
                text(
                    "SELECT count(*) FROM search_documents WHERE name LIKE :p OR title LIKE :p "
                    "OR summary LIKE :p OR fts_body LIKE :p"
                ),
                {"p": pattern},
            ).scalar()

        out["LIKE '%term%' scan (+count)"] = timed(like, like_n)
    return out


def incremental_rate(engine: Engine, data: dict[str, Any], n: int = 1000) -> float:
    """Documents re-indexed per second through the transactional path (an ORM bulk UPDATE
    of hub repositories, the session listeners rewriting their documents), rolled back."""
    ids = [r["id"] for r in data["repos"][:n]]
    with Session(engine) as session:
        t0 = time.perf_counter()
        session.execute(
            update(HubRepository)
            .where(HubRepository.id.in_(ids))
            .values(description="rewritten description for the incremental index benchmark")
        )
        session.flush()
        elapsed = time.perf_counter() - t0
        session.rollback()
    return len(ids) / elapsed


def db_size(engine: Engine, path: str | None) -> float:
    if path:
        # Outside any transaction (the store's SQLite connections begin one on first use,
        # and a checkpoint inside it finds the table locked).
        raw = engine.raw_connection()
        try:
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
        finally:
            raw.close()
        return os.path.getsize(path) / 2**20
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_database_size(current_database())")).scalar() / 2**20


def bench_backend(backend: str, data: dict[str, Any], args: argparse.Namespace) -> dict:
    rng = random.Random(11)
    tmp = tempfile.TemporaryDirectory(prefix="store-bench-")
    path = None
    admin = None
    if backend == "sqlite":
        path = os.path.join(tmp.name, "bench.db")
        url = f"sqlite:///{path}"
    else:
        base = make_url(args.pg_url).set(drivername="postgresql+psycopg")
        name = f"store_bench_{os.getpid()}"
        admin = make_engine(
            base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        t0 = time.perf_counter()
        load(engine, data)
        load_s = time.perf_counter() - t0
        size_before = db_size(engine, path)
        # The initial build is `store search reindex`: documents written in one pass, the
        # engine structures rebuilt once (not maintained row by row).
        t0 = time.perf_counter()
        with engine.begin() as conn:
            counts = indexer.reindex(conn)
        build_s = time.perf_counter() - t0
        if backend == "postgresql":
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        size_after = db_size(engine, path)
        incremental = incremental_rate(engine, data)
        load_before = os.getloadavg()
        terms = pick_terms(data["df"], data["rows"], rng)
        queries = run_queries(engine, terms, args.queries, rng)
        return {
            "backend": backend,
            "documents": counts["store"] + counts["hub"],
            "load_s": load_s,
            "index_build_s": build_s,
            "incremental_docs_per_s": incremental,
            "loadavg": (load_before, os.getloadavg()),
            "db_mib_before_index": size_before,
            "db_mib_after_index": size_after,
            "frequent_terms": {
                t: round(data["df"][t] / data["rows"] * 100, 1) for t in terms["frequent"][:5]
            },
            "queries": queries,
        }
    finally:
        engine.dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(
                    text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
                )
            admin.dispose()
        tmp.cleanup()


def report(result: dict) -> None:
    print(f"\n## {result['backend']} — {result['documents']:,} documents")
    print(
        f"raw load {result['load_s']:.1f} s; index build {result['index_build_s']:.1f} s; "
        f"database {result['db_mib_before_index']:.0f} MiB before index, "
        f"{result['db_mib_after_index']:.0f} MiB after"
    )
    (b1, b5, b15), (a1, a5, a15) = result["loadavg"]
    print(
        f"re-indexing through the transactional path: "
        f"{result['incremental_docs_per_s']:.0f} documents/s; load average (1/5/15 min) "
        f"before the queries {b1:.2f} {b5:.2f} {b15:.2f}, after {a1:.2f} {a5:.2f} {a15:.2f}"
    )
    print(f"frequent terms (% of documents): {result['frequent_terms']}")
    print("| query class | p50 ms | p95 ms | p99 ms | n |")
    print("|---|---|---|---|---|")
    for name, t in result["queries"].items():
        print(f"| {name} | {t['p50']:.2f} | {t['p95']:.2f} | {t['p99']:.2f} | {t['n']} |")


def _timeout(_signum: int, _frame: Any) -> None:
    raise SystemExit("bench/search.py: --max-seconds exceeded, stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per class")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("STORE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument(
        "--max-seconds",
        type=int,
        default=3600,
        help="stop (non-zero exit) if the whole run takes longer than this",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(args.max_seconds)
    t0 = time.perf_counter()
    data = generate(args.rows)
    print(f"generated {args.rows:,} entries in {time.perf_counter() - t0:.1f} s")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        report(bench_backend(backend, data, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
