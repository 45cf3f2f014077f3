"""Load test: a steady mix of registry tokens, search, product pages and payment webhooks.

    python bench/load.py [--seconds 60] [--rate 50] [--backend sqlite|postgresql] [--workers 2]

Loopback only and bounded in time: starts the store under uvicorn (``--workers``, default 2)
on a free 127.0.0.1 port with a fresh database (SQLite by default; ``--backend postgresql``
uses a new database on BENCH_PG_URL, dropped afterwards), seeds the demo catalog, a customer
with a personal access token, and pending one-time orders, then sends requests at a steady
rate (open loop: a request is due every 1/rate s whatever the answers; latency is counted
from when it was due, so queueing shows) for ``--seconds``:

- ``token`` 40 %: ``GET /token`` for an entitled pull (Basic, personal access token);
- ``search`` 25 %: ``/api/v1/search?q=..`` and the HTML ``/search?q=..`` in turn;
- ``product`` 25 %: a product page of the demo catalog;
- ``webhook`` 10 %: hand-signed Stripe events (the configured webhook secret, see
  docs/payments.md): ``payment_intent.succeeded`` for the seeded orders, one in five a
  redelivery of an earlier event.

Prints per class the rate, the error count (any status but 200, or no answer) and p50/p99,
then checks the database: every order paid by an event is paid once, with one entitlement.
Exits 1 when any request failed or an event was lost or applied twice.
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
import hashlib
import hmac
import json
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
HOST = "127.0.0.1"  # loopback only, always
WEBHOOK_SECRET = "whsec_bench_load_0123456789"
MIX = (("token", 40), ("search", 25), ("product", 25), ("webhook", 10))
QUERIES = ("redis", "postgres vault", "metrics", "inference", "ac*", "gateway -beta", "cache")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _admin_engine() -> Any:
    from store.db import make_engine

    return make_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )


def create_pg_database(name: str) -> str:
    from sqlalchemy import text

    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(name: str) -> None:
    from sqlalchemy import text

    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- seeding ---------------------------------------------------------------------------------


@dataclass
class Seeded:
    pat: str
    repository: str
    products: list[str]
    orders: list[tuple[str, int]]  # (order id, amount)


def seed(env: dict[str, str], n_orders: int) -> Seeded:
    from sqlalchemy import select

    from store import demo, migrate, security
    from store.accounts import service as accounts
    from store.billing import orders
    from store.billing.config import BillingSettings
    from store.billing.runtime import build_billing
    from store.catalog import service as catalog
    from store.catalog.models import Product
    from store.config import Settings
    from store.db import make_engine, make_sessionmaker, session_scope, utcnow
    from store.keys import service as keys

    security.use_cheap_hashing_for_tests()  # seeding only: hundreds of buyers, no log-ins
    settings = Settings(
        data_dir=Path(env["STORE_DATA_DIR"]),
        database_url=env.get("STORE_DATABASE_URL"),
        secret_key=env["STORE_SECRET_KEY"],
    )
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    billing = build_billing(
        BillingSettings(_env_file=None, gateway="test", stripe_webhook_secret=WEBHOOK_SECRET),  # type: ignore[call-arg]
        settings,
    )
    factory = make_sessionmaker(engine)
    with session_scope(factory) as session:
        session.info["settings"] = settings
        keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
        keys.ensure_key(session, purpose="license", secret=settings.resolved_secret_key)
        session.info["keyring"] = None
        demo.seed(session, password="bench password 123")
        session.flush()
        published = [
            p.repository
            for p in session.scalars(select(Product).where(Product.status == "published"))
        ]
        customer = accounts.find_account(session, demo.CUSTOMER)
        assert customer is not None
        pat = accounts.create_token(
            session, kind="personal", name="load", scopes=["pull"], created_by=customer
        ).secret
        publisher = accounts.create_account(
            session, username="loadpub", email="loadpub@example.com", password="x" * 12
        )
        publisher.email_verified_at = utcnow()  # publishing needs a confirmed address
        org = accounts.create_organization(session, owner=publisher, slug="loadpub", name="L")
        product = catalog.create_product(
            session, actor=publisher, org=org, kind="image", slug="once", title="Once"
        )
        tier = catalog.create_tier(
            session,
            actor=publisher,
            product=product,
            slug="once",
            name="Once",
            billing="one_time",
            amount_minor=1500,
        )
        session.refresh(product)
        catalog.set_status(session, actor=publisher, product=product, status="published")
        buyers = [
            accounts.create_account(
                session, username=f"buyer{i}", email=f"buyer{i}@example.com", password="x" * 12
            )
            for i in range(n_orders)
        ]
    pending = []
    with session_scope(factory) as session:
        session.info["settings"] = settings
        tier = session.merge(tier)
        for buyer in buyers:
            order = orders.start_checkout(session, billing, account=session.merge(buyer), tier=tier)
            pending.append((str(order.id), order.total_minor))
    engine.dispose()
    repository = demo.CUSTOMER_GRANTS[0][0]
    return Seeded(pat, repository, sorted(published), pending)


# --- requests --------------------------------------------------------------------------------


def sign(payload: str) -> str:
    t = int(time.time())
    mac = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.{payload}".encode(), hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def payment_event(order_id: str, amount: int) -> dict[str, Any]:
    return {
        "id": f"evt_load_{uuid.uuid4().hex[:20]}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": int(time.time()),
        "livemode": False,
        "data": {
            "object": {
                "id": f"pi_load_{order_id[:8]}",
                "object": "payment_intent",
                "amount": amount,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"order_id": order_id},
            }
        },
    }


@dataclass
class Plan:
    seeded: Seeded
    sent_events: list[str] = field(default_factory=list)
    paid_orders: list[str] = field(default_factory=list)
    i: int = 0

    def request(self, kind: str) -> tuple[str, str, dict[str, str], bytes | None]:
        self.i += 1
        if kind == "token":
            auth = base64.b64encode(f"casey:{self.seeded.pat}".encode()).decode()
            scope = f"repository:{self.seeded.repository}:pull"
            return (
                "GET",
                f"/token?service=store-registry&scope={scope}",
                {"Authorization": f"Basic {auth}"},
                None,
            )
        if kind == "search":
            q = QUERIES[self.i % len(QUERIES)]
            if self.i % 2:
                return "GET", f"/api/v1/search?q={q}", {}, None
            return "GET", f"/search?q={q}", {"Accept": "text/html"}, None
        if kind == "product":
            name = self.seeded.products[self.i % len(self.seeded.products)]
            return "GET", f"/products/{name}", {"Accept": "text/html"}, None
        # webhook: a new payment, or (one in five, and when orders run out) a redelivery
        if self.seeded.orders and (self.i % 5 or not self.sent_events):
            order_id, amount = self.seeded.orders.pop()
            event = payment_event(order_id, amount)
            self.paid_orders.append(order_id)
            body = json.dumps(event)
            self.sent_events.append(body)
        else:
            body = random.choice(self.sent_events)
        headers = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
        return "POST", "/billing/stripe/webhook", headers, body.encode()


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


async def drive(port: int, plan: Plan, seconds: float, rate: float) -> Stats:
    import httpx

    stats = Stats({k: [] for k, _ in MIX}, {k: [] for k, _ in MIX})
    slots = [kind for kind, weight in MIX for _ in range(weight)]
    random.Random(7).shuffle(slots)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", limits=limits, timeout=30
    ) as client:

        async def one(kind: str, due: float) -> None:
            method, path, headers, body = plan.request(kind)
            try:
                response = await client.request(method, path, headers=headers, content=body)
                status = response.status_code
                if status != 200:
                    stats.errors[kind].append(f"{status} {path} {response.text[:200]}")
            except httpx.HTTPError as exc:
                stats.errors[kind].append(f"{type(exc).__name__} {path}")
            stats.latencies[kind].append(time.perf_counter() - due)

        start = time.perf_counter()
        tasks = []
        n = int(seconds * rate)
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(slots[i % len(slots)], due)))
        # Bounded: answers still missing 30 s after the last request was sent are errors.
        _, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        if pending:
            stats.errors["token"].append(f"{len(pending)} requests got no answer in time")
    return stats


def check_events(env: dict[str, str], paid_orders: list[str]) -> list[str]:
    """Every order an event paid: paid, with exactly one entitlement."""
    from sqlalchemy import func, select

    from store.billing.models import Order
    from store.config import Settings
    from store.db import make_engine
    from store.licensing.models import Entitlement

    settings = Settings(
        data_dir=Path(env["STORE_DATA_DIR"]),
        database_url=env.get("STORE_DATABASE_URL"),
        secret_key=env["STORE_SECRET_KEY"],
    )
    engine = make_engine(settings.resolved_database_url)
    problems = []
    with engine.connect() as conn:
        for order_id in paid_orders:
            status = conn.scalar(select(Order.status).where(Order.id == uuid.UUID(order_id)))
            grants = conn.scalar(
                select(func.count())
                .select_from(Entitlement)
                .where(Entitlement.source_ref == order_id)
            )
            if status != "paid" or grants != 1:
                problems.append(f"order {order_id}: {status}, {grants} entitlements")
    engine.dispose()
    return problems


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE_", "STRIPE_"))}
    env.update(
        STORE_DATA_DIR=str(tmp / "data"),
        STORE_SECRET_KEY="bench-load-secret-0123456789abcdef",
        STORE_PUBLIC_URL=f"http://{HOST}:{port}",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STORE_BILLING_GATEWAY="test",
        STORE_BILLING_SWEEP_INTERVAL="0",
        PYTHONPATH=str(ROOT),
    )
    pg_name = f"store_load_{os.getpid()}"
    if args.backend == "postgresql":
        env["STORE_DATABASE_URL"] = create_pg_database(pg_name)
    webhook_share = dict(MIX)["webhook"] / sum(w for _, w in MIX)
    n_orders = int(args.seconds * args.rate * webhook_share) + 10
    print(f"seeding (demo catalog, {n_orders} pending orders) ...", flush=True)
    seeded = seed(env, n_orders)
    log = open(tmp / "uvicorn.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "store.app:create_app", "--factory"),
            *("--workers", str(args.workers), "--host", HOST, "--port", str(port)),
            *("--no-access-log", "--log-level", "warning"),
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(port, server)
        plan = Plan(seeded)
        print(f"driving {args.rate:g} req/s for {args.seconds:g} s on {args.workers} workers")
        load_before = os.getloadavg()[0]
        stats = asyncio.run(drive(port, plan, args.seconds, args.rate))
        time.sleep(0.5)
        problems = check_events(env, plan.paid_orders)
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
        if args.backend == "postgresql":
            drop_pg_database(pg_name)
    failed = _report(stats, args, load_before)
    print(f"webhooks: {len(plan.paid_orders)} orders paid by event, ", end="")
    print(f"{len(problems)} lost or doubled" + (f": {problems[:5]}" if problems else ""))
    if failed or problems:
        print(f"server log: {tmp / 'uvicorn.log'}")
        return 1
    return 0


def _report(stats: Stats, args: argparse.Namespace, load_before: float) -> int:
    print(f"\n{args.backend}, {args.workers} workers, {args.rate:g} req/s for {args.seconds:g} s")
    print(f"{'class':<10}{'requests':>10}{'req/s':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    total_errors = 0
    everything: list[float] = []
    for kind, _ in MIX:
        lat = sorted(stats.latencies[kind])
        everything += lat
        errors = len(stats.errors[kind])
        total_errors += errors
        print(
            f"{kind:<10}{len(lat):>10}{len(lat) / args.seconds:>8.1f}{errors:>8}"
            f"{_pct(lat, 50):>9.1f}{_pct(lat, 99):>9.1f}"
        )
    everything.sort()
    print(
        f"{'all':<10}{len(everything):>10}{len(everything) / args.seconds:>8.1f}"
        f"{total_errors:>8}{_pct(everything, 50):>9.1f}{_pct(everything, 99):>9.1f}"
    )
    print(f"load average: {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    for kind, errors in stats.errors.items():
        for line in errors[:3]:
            print(f"  {kind} error: {line}")
    return total_errors


def _pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    if p == 50:
        return statistics.median(values) * 1000
    return values[max(0, int(len(values) * p / 100) - 1)] * 1000


def _wait(port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("uvicorn exited; see its log")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("uvicorn did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    sys.exit(run(args))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
