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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

import store.models
import store.search  # noqa: F401
from store import migrate
from store.accounts.models import Organization
from store.catalog.models import Category, Product, Tier, product_categories
from store.db import READ_ONLY, make_engine
from store.registry import hub
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


def vocabulary_size(rows: int) -> int:
    """Synthetic words for a corpus of ``rows`` entries: the vocabulary grows with the corpus
    (one new word per five entries, at least 20,000), so that under the Zipf weights below
    the rarest words stay in a handful of documents at every size (at a fixed 20,000 words,
    a million entries left no word in fewer than ~100 documents: no rare class)."""
    return max(20_000, rows // 5)


def generate(rows: int, seed: int = 7) -> dict[str, Any]:
    """Orgs, products (10 % of rows) with tiers and categories, and hub repositories."""
    rng = random.Random(seed)
    synthetic = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 9)))
        for _ in range(vocabulary_size(rows))
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
            private = rng.random() < 0.05
            repos.append(
                {
                    "id": uuid.uuid4(),
                    "name": name,
                    "namespace": org["slug"],
                    "description": description,
                    "private": private,
                    # Anyone may pull (and find) the repository: the namespace's setting.
                    "visibility": "private" if private else "public",
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
    """Query words of each class, from the corpus's own document frequencies: frequent
    (≈ 10 % of the documents), mid-frequency (≈ 1 %), rare (2-20 documents). Every class
    exists at every size because the vocabulary grows with the corpus (vocabulary_size);
    a class that still came out empty is an error, not a silently smaller run."""
    by_share = sorted(df.items(), key=lambda kv: -kv[1])

    def near(share: float, k: int) -> list[str]:
        ranked = sorted(by_share[:5000], key=lambda kv: abs(kv[1] / rows - share))
        return [w for w, _ in ranked[: k * 2] if len(w) >= 3][:k]

    frequent = near(0.10, 10)
    mid = near(0.01, 20)
    rare = [w for w, n in by_share if 2 <= n <= 20 and len(w) >= 4 and w.isalpha()]
    if len(rare) < 20 or len(frequent) < 5 or len(mid) < 10:
        raise SystemExit(
            f"bench/search.py: {rows:,} rows gave {len(frequent)} frequent, {len(mid)} "
            f"mid-frequency and {len(rare)} rare words: the vocabulary does not fit the size"
        )
    rare = rng.sample(rare[:5000], 20)
    common = frequent + mid
    one = frequent + mid + rare
    two = [f"{rng.choice(common)} {rng.choice(common)}" for _ in range(40)]
    # Phrases of two common words: every document holding both is a candidate for the
    # adjacency check. Quoted, and as typed in the search box with a hyphen and the last
    # word still being typed ("alpha-be").
    phrases = [f'"{rng.choice(frequent)} {rng.choice(common)}"' for _ in range(20)]
    phrases += [f"{rng.choice(frequent)}-{rng.choice(common)[:3]}" for _ in range(20)]
    prefixes = [w[:2] for w in common] + [w[:3] for w in common]
    # Other forms of indexed words, found through their English stem ("gulvjts" and
    # "gulvjting" find "gulvjt"), the last one also as a prefix.
    inflected = [w + rng.choice(("s", "ing", "ed")) for w in common]
    return {
        "inflected": inflected,
        "frequent": frequent,
        "mid": mid,
        "rare": rare,
        "one": one,
        "two": two,
        "phrase": phrases,
        "prefix": prefixes,
        "top": [by_share[0][0]],
    }


LIKE_CLASS = "LIKE '%term%' scan (+count)"


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
    """Time each class; print its row as soon as it is measured. The unindexed scan goes
    first: every row carries its p95 as a ratio of the scan's p50 (on a loaded machine the
    ratios compare across runs where the milliseconds do not) and the load average then."""
    out: dict[str, dict[str, float]] = {}
    with Session(engine, execution_options={READ_ONLY: True}) as session:

        def search(q: str, **kw: Any) -> Callable[[], Any]:
            filters = service.make_filters(**kw.pop("filters", {}))
            return lambda: service.search(session, q=q, filters=filters, **kw)

        def cycle(make: Callable[[], Callable[[], Any]]) -> Callable[[], Any]:
            return lambda: make()()

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

        classes = {
            "one-term": lambda: search(rng.choice(terms["one"])),
            "frequent term": lambda: search(rng.choice(terms["frequent"])),
            "mid-frequency term": lambda: search(rng.choice(terms["mid"])),
            "rare term": lambda: search(rng.choice(terms["rare"])),
            "two-term": lambda: search(rng.choice(terms["two"])),
            "phrase, two common words": lambda: search(rng.choice(terms["phrase"])),
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
        say("| query class | p50 ms | p95 ms | p99 ms | n | p95 ÷ scan p50 | load (1 min) |")
        say("|---|---|---|---|---|---|---|")
        out[LIKE_CLASS] = timed(like, like_n)
        baseline = out[LIKE_CLASS]["p50"]
        say(_row(LIKE_CLASS, out[LIKE_CLASS], baseline))
        for name, make in classes.items():
            out[name] = timed(cycle(make), n)
            say(_row(name, out[name], baseline))
    return out


def _row(name: str, t: dict[str, float], baseline: float) -> str:
    return (
        f"| {name} | {t['p50']:.2f} | {t['p95']:.2f} | {t['p99']:.2f} | {t['n']:.0f} "
        f"| {t['p95'] / baseline:.3f} | {os.getloadavg()[0]:.2f} |"
    )


def say(line: str) -> None:
    """Print a result the moment it is measured (a long run stopped by --max-seconds, or
    watched through a pipe, still shows everything measured so far)."""
    print(line, flush=True)


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


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


def visibility_delay(engine: Engine, data: dict[str, Any], n: int = 20) -> dict[str, float]:
    """Time (ms) from the start of a change until another connection's search shows it:
    a pull (``record_pull``: the repository's count, its listing's document) and a listing
    edit (a new summary word), each committed, then searched for until seen (at most 5 s)."""
    rng = random.Random(5)
    delays: list[float] = []
    listings = [p for p in data["products"] if p["status"] == "published"]
    with Session(engine, execution_options={READ_ONLY: True}) as reader:
        for i in range(n):
            started = time.perf_counter()
            if i % 2 == 0:
                repo = rng.choice([r for r in data["repos"][:2000] if not r["private"]])
                with Session(engine) as writer, writer.begin():
                    before = writer.scalar(
                        select(HubRepository.pull_count).where(HubRepository.id == repo["id"])
                    )
                    hub.record_pull(writer, name=repo["name"], at=datetime.now(UTC))
                q, want = repo["name"], ("pull_count", (before or 0) + 1)
            else:
                product = rng.choice(listings)
                word = f"edit{i}x{rng.randrange(10**6)}"
                with Session(engine) as writer, writer.begin():
                    row = writer.get(Product, product["id"])
                    assert row is not None
                    row.summary = f"{word} {row.summary}"[:300]
                q, want = word, ("summary", word)
            while True:
                reader.rollback()  # a new snapshot
                hits = service.search(reader, q=q).hits
                if any(
                    (want[0] == "summary" and want[1] in h.doc.summary)
                    or (want[0] == "pull_count" and h.doc.pull_count == want[1])
                    for h in hits
                ):
                    break
                if time.perf_counter() - started > 5:
                    raise SystemExit(f"bench/search.py: {q!r} not visible in search after 5 s")
                time.sleep(0.005)
            delays.append((time.perf_counter() - started) * 1000)
    return {"p50": percentile(delays, 50), "max": max(delays), "n": n}


def reindex_beside_searches(
    engine: Engine, terms: dict[str, list[str]], rng: random.Random
) -> dict[str, Any]:
    """A full reindex in one thread while another searches: the searches' latency during it
    (a search that waited for the rebuild shows as its whole duration) and its rate."""
    done = threading.Event()
    result: dict[str, Any] = {}

    def rebuild() -> None:
        t0 = time.perf_counter()
        counts = indexer.full_reindex(engine)
        result["seconds"] = time.perf_counter() - t0
        result["documents"] = counts["store"] + counts["hub"]
        done.set()

    thread = threading.Thread(target=rebuild)
    samples: list[float] = []
    with Session(engine, execution_options={READ_ONLY: True}) as session:
        thread.start()
        while not done.is_set():
            q = rng.choice(terms["one"])
            started = time.perf_counter()
            service.search(session, q=q)
            samples.append((time.perf_counter() - started) * 1000)
            session.rollback()
    thread.join()
    result["searches"] = len(samples)
    result["p50"] = percentile(samples, 50) if samples else 0.0
    result["p95"] = percentile(samples, 95) if samples else 0.0
    result["max"] = max(samples, default=0.0)
    return result


def table_sizes(engine: Engine) -> dict[str, float]:
    """PostgreSQL: MiB of each search table (heap, TOAST and indexes) and of its indexes."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.relname, pg_total_relation_size(c.oid), pg_indexes_size(c.oid) "
                "FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'search\\_%' "
                "AND c.relnamespace = to_regnamespace(current_schema())::oid ORDER BY 1"
            )
        ).all()
    out = {}
    for name, total, indexes in rows:
        out[name] = total / 2**20
        out[f"{name} (indexes)"] = indexes / 2**20
    return out


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
        name = args.keep_database or f"store_bench_{os.getpid()}"
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
        say(f"\n## {backend}")
        say(f"raw load {load_s:.1f} s; database {size_before:,.0f} MiB before the index")
        # The initial build is `store search reindex` (indexer.full_reindex): documents
        # written, then the engine structures built once beside the live ones and swapped.
        t0 = time.perf_counter()
        counts = indexer.full_reindex(engine)
        build_s = time.perf_counter() - t0
        docs = counts["store"] + counts["hub"]
        say(
            f"full reindex of {docs:,} documents: {build_s:.1f} s, "
            f"{docs / build_s:,.0f} documents/s ({_load()})"
        )
        if backend == "postgresql":
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
        else:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        size_after = db_size(engine, path)
        growth = size_after - size_before
        say(
            f"database {size_after:,.0f} MiB after the index: "
            f"{growth * 2**20 / docs / 1000:.2f} KB per document (database growth)"
        )
        sizes = table_sizes(engine) if backend == "postgresql" else {}
        for table, mib in sizes.items():
            say(f"  {table}: {mib:,.1f} MiB ({mib * 2**20 / docs / 1000:.2f} KB per document)")
        incremental = incremental_rate(engine, data)
        say(
            f"re-indexing through the transactional path: {incremental:,.0f} documents/s "
            f"({_load()})"
        )
        terms = pick_terms(data["df"], data["rows"], rng)
        frequent = {t: round(data["df"][t] / data["rows"] * 100, 1) for t in terms["frequent"][:5]}
        say(f"frequent terms (% of documents): {frequent}")
        queries = run_queries(engine, terms, args.queries, rng)
        visible = visibility_delay(engine, data)
        say(
            f"change visible in another connection's search: p50 {visible['p50']:.1f} ms, "
            f"max {visible['max']:.1f} ms ({visible['n']} changes: pulls and listing edits; "
            f"{_load()})"
        )
        beside = None
        if args.concurrent_reindex:
            beside = reindex_beside_searches(engine, terms, rng)
            say(
                f"reindex beside searches: {beside['documents'] / beside['seconds']:,.0f} "
                f"documents/s; {beside['searches']} searches meanwhile, p50 "
                f"{beside['p50']:.1f} ms, p95 {beside['p95']:.1f} ms, max "
                f"{beside['max']:.1f} ms ({_load()})"
            )
        return {
            "backend": backend,
            "documents": docs,
            "load_s": load_s,
            "index_build_s": build_s,
            "incremental_docs_per_s": incremental,
            "visibility_ms": visible,
            "reindex_beside_searches": beside,
            "table_mib": sizes,
            "db_mib_before_index": size_before,
            "db_mib_after_index": size_after,
            "queries": queries,
        }
    finally:
        engine.dispose()
        if admin is not None:
            if not args.keep_database:
                with admin.connect() as conn:
                    conn.execute(
                        text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')
                    )
            admin.dispose()
        tmp.cleanup()


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
    parser.add_argument(
        "--no-concurrent-reindex",
        dest="concurrent_reindex",
        action="store_false",
        help="skip the second reindex timed beside searches",
    )
    parser.add_argument(
        "--keep-database",
        metavar="NAME",
        help="PostgreSQL: build the index in this database and keep it afterwards (for "
        "EXPLAIN and profiles; replaced if it exists)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(args.max_seconds)
    t0 = time.perf_counter()
    data = generate(args.rows)
    say(f"generated {args.rows:,} entries in {time.perf_counter() - t0:.1f} s ({_load()})")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        bench_backend(backend, data, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
