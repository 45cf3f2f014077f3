"""Load test: a steady mix of registry tokens, search, product pages and payment webhooks.

    python bench/load.py [--seconds 60] [--rate 50] [--backend sqlite|postgresql] [--workers 2]
                         [--hosts 2 [--kill-at 30]]

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

``--hosts N`` (N > 1, PostgreSQL) starts N store hosts (``store serve --workers W`` each, on
loopback ports, one database) behind a balancer, ``--balancer haproxy`` (default) configured
as ``deploy/haproxy/store.cfg`` (active health checks on ``/readyz``) or ``--balancer nginx``
as ``deploy/nginx/store.conf`` (passive checks only: open-source nginx has no active ones),
the Debian package installed with apt-get when missing, a request whose host died sent again
to another. It also starts Debian's docker-registry, configured by ``store registry config``
with the balancer as the store's address (token realm and **notification endpoint**), pushes
a small image to it, and adds registry pulls to the mix (``pull`` 10 %: ``GET /token``
through the balancer, then the manifest GET at the registry with that token; the registry
notifies the store through the balancer). Before the load it checks that a credential
guessed across the hosts is limited as on one (the account's ``/token`` attempts,
alternately on each host), that a web session made on one host is valid on the others, and
that a **registry key rotation** made through one host's environment (published in the
registry's bundle, then activated) is picked up by the other within its
``STORE_KEYS_REFRESH_SECONDS`` (the bench sets 2 s), the registry accepting the tokens of
both hosts. At ``--kill-at`` seconds (default: half-way; 0: never) the last host is killed
(SIGKILL, supervisor and workers): the balancer takes it out. Payment events that failed are
delivered once more at the end, as Stripe would, before the database check; every manifest
GET the registry answered must then be counted exactly once in the hub's pull count.
"""

# ruff: noqa: E402  (sys.path is fixed before the imports)
from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))  # the repository, for bench._common

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import HOST, ROOT, create_pg_database, drop_pg_database, free_port

WEBHOOK_SECRET = "whsec_bench_load_0123456789"
MIX = (("token", 40), ("search", 25), ("product", 25), ("webhook", 10))
HOSTS_MIX = (("token", 35), ("search", 25), ("product", 20), ("webhook", 10), ("pull", 10))
KEYS_REFRESH_S = 2  # STORE_KEYS_REFRESH_SECONDS of the hosts (--hosts)
PUSH_REPOSITORY = "loadpub/once"  # the bench publisher's product, pushed to the registry
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
QUERIES = ("redis", "postgres vault", "metrics", "inference", "ac*", "gateway -beta", "cache")


# --- seeding ---------------------------------------------------------------------------------


@dataclass
class Seeded:
    pat: str
    repository: str
    products: list[str]
    orders: list[tuple[str, int]]  # (order id, amount)
    push_pat: str = ""  # the publisher's (pull and push on PUSH_REPOSITORY)


def seed(env: dict[str, str], n_orders: int) -> Seeded:
    from sqlalchemy import select

    from store import demo, followers, migrate, security
    from store.accounts import service as accounts
    from store.billing import orders
    from store.billing.config import BillingSettings
    from store.billing.runtime import build_billing
    from store.catalog import service as catalog
    from store.catalog.models import Product
    from store.config import Settings
    from store.db import make_engine, make_sessionmaker, session_scope, utcnow
    from store.keys import service as keys

    followers.install()  # the hub and billing follow catalog edits, as in the store
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
        keys.ensure_key(session, purpose="registry", secret=settings.resolved_secret_key)
        keys.ensure_key(session, purpose="license", secret=settings.resolved_secret_key)
        demo.seed(session, password="bench password 123", settings=settings)
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
            session, username="loadpublisher", email="loadpub@example.com", password="x" * 12
        )
        publisher.email_verified_at = utcnow()  # publishing needs a confirmed address
        push_pat = accounts.create_token(
            session, kind="personal", name="push", scopes=["pull", "push"], created_by=publisher
        ).secret
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
        tier = session.merge(tier)
        for buyer in buyers:
            order = orders.start_checkout(session, billing, account=session.merge(buyer), tier=tier)
            pending.append((str(order.id), order.total_minor))
    engine.dispose()
    repository = demo.CUSTOMER_GRANTS[0][0]
    return Seeded(pat, repository, sorted(published), pending, push_pat)


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
        if kind == "pull":  # the token for the pull; drive() then GETs the manifest
            auth = base64.b64encode(f"loadpublisher:{self.seeded.push_pat}".encode()).decode()
            scope = f"repository:{PUSH_REPOSITORY}:pull"
            return (
                "GET",
                f"/token?service=store-registry&scope={scope}",
                {"Authorization": f"Basic {auth}"},
                None,
            )
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
    failed_events: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    pulls: int = 0  # manifest GETs the registry answered 200


async def drive(
    port: int,
    plan: Plan,
    seconds: float,
    rate: float,
    kill: tuple[float, Callable[[], None]] | None = None,
    *,
    mix: tuple[tuple[str, int], ...] = MIX,
    registry: str | None = None,
) -> Stats:
    import httpx

    stats = Stats({k: [] for k, _ in mix}, {k: [] for k, _ in mix})
    slots = [kind for kind, weight in mix for _ in range(weight)]
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
                if status == 200 and kind == "pull" and registry is not None:
                    path = f"http://{registry}/v2/{PUSH_REPOSITORY}/manifests/1"
                    bearer = {
                        "Authorization": f"Bearer {response.json()['token']}",
                        "Accept": MANIFEST_TYPE,
                    }
                    response = await client.get(path, headers=bearer)
                    status = response.status_code
                    stats.pulls += status == 200
                if status != 200:
                    stats.errors[kind].append(f"{status} {path} {response.text[:200]}")
            except httpx.HTTPError as exc:
                status = 0
                stats.errors[kind].append(f"{type(exc).__name__} {path}")
            if status != 200 and kind == "webhook" and body is not None:
                stats.failed_events.append((headers, body))
            stats.latencies[kind].append(time.perf_counter() - due)

        start = time.perf_counter()
        tasks = []
        if kill is not None:
            at, action = kill

            async def later() -> None:
                await asyncio.sleep(at)
                action()

            killer = asyncio.create_task(later())
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
        if kill is not None:
            await killer
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
    if args.hosts > 1:
        return run_hosts(args)
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


HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "store.cfg"
NGINX_CONF = ROOT / "deploy" / "nginx" / "store.conf"


def haproxy_config(port: int, hosts: list[int]) -> str:
    """deploy/haproxy/store.cfg with the balancer on ``port`` and the hosts on loopback."""
    lines = []
    for line in HAPROXY_CFG.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("server "):
            continue
        if stripped == "bind :80":
            line = f"    bind {HOST}:{port}"
        lines.append(line)
    lines += [f"    server store{i + 1} {HOST}:{p} check" for i, p in enumerate(hosts)]
    return "\n".join(lines) + "\n"


def nginx_config(port: int, hosts: list[int], prefix: Path) -> str:
    """A whole nginx.conf around deploy/nginx/store.conf, its ``listen`` and ``server``
    lines rewritten to loopback ports, everything nginx writes under ``prefix``."""
    lines: list[str] = []
    servers_written = False
    for line in NGINX_CONF.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("server ") and "max_fails" in stripped:  # upstream members
            options = stripped.split(None, 2)[2]  # max_fails=… fail_timeout=…;
            if not servers_written:
                lines += [f"    server {HOST}:{p} {options}" for p in hosts]
                servers_written = True
            continue
        if stripped == "listen 80;":
            line = f"    listen {HOST}:{port};"
        lines.append(line)
    temp = {name: prefix / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    return (
        "\n".join(
            [
                "daemon off;",
                "worker_processes 1;",
                f"pid {prefix / 'nginx.pid'};",
                f"error_log {prefix / 'nginx-error.log'} warn;",
                "events { worker_connections 1024; }",
                "http {",
                "    access_log off;",
                *(f"    {name}_temp_path {path};" for name, path in temp.items()),
                *lines,
                "}",
            ]
        )
        + "\n"
    )


def ensure_tool(name: str, package: str | None = None) -> str:
    """The binary ``name``; installs Debian's package when missing (as root)."""
    path = "/usr/sbin:/sbin:/usr/bin:/bin"
    found = shutil.which(name) or shutil.which(name, path=path)
    if found:
        return found
    package = package or name
    if os.geteuid() != 0:
        raise SystemExit(f"{name} is not installed: apt-get install {package}")
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True)
    found = shutil.which(name, path=path)
    if not found:
        raise SystemExit(f"{package} did not install")
    return found


def _get(port: int, path: str, **kwargs: Any) -> Any:
    import httpx

    return httpx.get(f"http://{HOST}:{port}{path}", timeout=30, **kwargs)


def check_shared_limits(hosts: list[int], username: str) -> str | None:
    """Wrong passwords for one account, alternately on each host: the account's /token
    limit (20 per window) holds across them. None when it does, else what happened."""
    import httpx

    from store.ratelimit import Limits

    limit = Limits().token_account.limit
    statuses = []
    for i in range(limit + 4):
        auth = base64.b64encode(f"{username}:wrong-{i}".encode()).decode()
        response = httpx.get(
            f"http://{HOST}:{hosts[i % len(hosts)]}/token?service=store-registry",
            headers={"Authorization": f"Basic {auth}", "X-Forwarded-For": f"10.77.0.{i + 1}"},
            timeout=60,
        )
        statuses.append(response.status_code)
    checked = statuses.count(401)
    if checked != limit or statuses[limit:] != [429] * 4:
        return f"{checked} checked (limit {limit}), answers {statuses}"
    return None


def check_sessions(hosts: list[int], username: str, password: str) -> str | None:
    """Log in on the first host; the session cookie is valid on every other host."""
    import re

    import httpx

    with httpx.Client(base_url=f"http://{HOST}:{hosts[0]}", timeout=60) as client:
        page = client.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if match is None:
            return "no CSRF token on the log-in page"
        form = {"login": username, "password": password, "csrf_token": match.group(1)}
        answer = client.post("/login", data=form)
        if answer.status_code != 303:
            return f"log-in answered {answer.status_code}"
        cookies = dict(client.cookies)
    for port in hosts[1:]:
        mine = _get(port, "/my/account", cookies=cookies, follow_redirects=False)
        if mine.status_code != 200:
            return f"host :{port} answered {mine.status_code} to the session of host :{hosts[0]}"
    return None


def cli(env: dict[str, str], *args: str) -> Any:
    """A ``store`` command with ``--json`` in this environment (an operator on a host)."""
    done = subprocess.run(
        [sys.executable, "-m", "store.cli.main", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"store {' '.join(args)} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _token(port: int, scope: str = "", basic: str = "") -> str:
    query = (
        f"/token?service=store-registry&scope={scope}" if scope else "/token?service=store-registry"
    )
    headers = {"Authorization": f"Basic {basic}"} if basic else {}
    answer = _get(port, query, headers=headers)
    if answer.status_code != 200:
        raise SystemExit(f"/token on :{port} answered {answer.status_code}: {answer.text[:300]}")
    return str(answer.json()["token"])


def _kid(jwt: str) -> str:
    header = jwt.split(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def push_image(port: int, registry: str, pat: str) -> None:
    """A one-layer image as PUSH_REPOSITORY:1, through the registry's HTTP API, with a
    token from the store on ``port``."""
    import httpx

    basic = base64.b64encode(f"loadpublisher:{pat}".encode()).decode()
    token = _token(port, f"repository:{PUSH_REPOSITORY}:pull,push", basic)
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://{registry}/v2/{PUSH_REPOSITORY}"
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
    layer = os.urandom(4096)
    with httpx.Client(timeout=30) as client:
        for blob in (config, layer):
            digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
            started = client.post(f"{base}/blobs/uploads/", headers=auth)
            if started.status_code != 202:
                raise SystemExit(f"blob upload answered {started.status_code}: {started.text}")
            location = started.headers["Location"]
            if location.startswith("/"):
                location = f"http://{registry}{location}"
            separator = "&" if "?" in location else "?"
            done = client.put(
                f"{location}{separator}digest={digest}", content=blob,
                headers={**auth, "Content-Type": "application/octet-stream"},
            )  # fmt: skip
            if done.status_code != 201:
                raise SystemExit(f"blob upload answered {done.status_code}: {done.text}")
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{hashlib.sha256(config).hexdigest()}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{hashlib.sha256(layer).hexdigest()}",
                    "size": len(layer),
                }
            ],
        }
        put = client.put(
            f"{base}/manifests/1",
            content=json.dumps(manifest).encode(),
            headers={**auth, "Content-Type": MANIFEST_TYPE},
        )
        if put.status_code != 201:
            raise SystemExit(f"manifest push answered {put.status_code}: {put.text}")


def check_rotation(
    env: dict[str, str], hosts: list[int], registry: str, old: str, new: str
) -> tuple[str | None, float]:
    """Activate the published registry key ``new`` through the first host's environment;
    (None, seconds until the last host signs with it), or what went wrong. The registry,
    which trusts both keys, must accept tokens of every host signed before and after."""
    import httpx

    def accepted(token: str) -> bool:
        answer = httpx.get(
            f"http://{registry}/v2/", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        return answer.status_code == 200

    before = [_token(port) for port in hosts]
    if {_kid(t) for t in before} != {old}:
        return f"before the activation the hosts signed with {sorted({_kid(t) for t in before})}", 0
    cli(env, "keys", "activate", new)
    started = time.monotonic()
    bound = KEYS_REFRESH_S + 10  # the setting, plus slack for a loaded machine
    while True:
        kids = {_kid(_token(port)) for port in hosts for _ in range(2 * 4)}
        if kids == {new}:
            took = time.monotonic() - started
            break
        if time.monotonic() - started > bound:
            return f"still signing with {sorted(kids)} after {bound} s", bound
        time.sleep(0.2)
    after = [_token(port) for port in hosts]
    if not all(accepted(t) for t in before + after):
        return "the registry refused a token of the old or the new key", took
    return None, took


def pull_count(env: dict[str, str]) -> int:
    from sqlalchemy import select

    from store.db import make_engine
    from store.registry.models import HubRepository

    engine = make_engine(env["STORE_DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.scalar(
            select(HubRepository.pull_count).where(HubRepository.name == PUSH_REPOSITORY)
        )
    engine.dispose()
    return int(count or 0)


def check_pulls(env: dict[str, str], baseline: int, pulled: int) -> str | None:
    """Every manifest GET the registry answered is counted once, once its notification (the
    registry sends them one after another, retrying) has gone through the balancer."""
    deadline = time.monotonic() + 60
    while True:
        counted = pull_count(env) - baseline
        if counted == pulled:
            return None
        if counted > pulled or time.monotonic() > deadline:
            return f"{pulled} manifest GETs, {counted} pulls counted"
        time.sleep(0.5)


def start_balancer(
    args: argparse.Namespace, tmp: Path, port: int, hosts: list[int]
) -> subprocess.Popen[bytes]:
    out = open(tmp / f"{args.balancer}.log", "wb")  # noqa: SIM115
    if args.balancer == "nginx":
        nginx = ensure_tool("nginx")
        (tmp / "nginx.conf").write_text(nginx_config(port, hosts, tmp / "nginx"))
        argv = [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp / "nginx")]
    else:
        haproxy = ensure_tool("haproxy")
        (tmp / "haproxy.cfg").write_text(haproxy_config(port, hosts))
        argv = [haproxy, "-f", str(tmp / "haproxy.cfg"), "-db"]
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def run_hosts(args: argparse.Namespace) -> int:
    registry_bin = ensure_tool("docker-registry")
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-hosts-"))
    lb_port, registry_port = free_port(), free_port()
    registry = f"{HOST}:{registry_port}"
    ports = [free_port() for _ in range(args.hosts)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STORE_", "STRIPE_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    pg_name = f"store_load_{os.getpid()}"
    env.update(
        STORE_DATA_DIR=str(tmp / "data"),
        STORE_SECRET_KEY="bench-load-secret-0123456789abcdef",
        STORE_PUBLIC_URL=f"http://{HOST}:{lb_port}",
        STORE_REGISTRY_URL=f"http://{registry}",
        STORE_TRUSTED_PROXIES=HOST,
        STORE_DATABASE_URL=create_pg_database(pg_name),
        STORE_KEYS_REFRESH_SECONDS=str(KEYS_REFRESH_S),
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STORE_BILLING_GATEWAY="test",
        STORE_BILLING_SWEEP_INTERVAL="0",
        PYTHONPATH=str(ROOT),
    )
    webhook_share = dict(HOSTS_MIX)["webhook"] / sum(w for _, w in HOSTS_MIX)
    n_orders = int(args.seconds * args.rate * webhook_share) + 10
    print(f"seeding (demo catalog, {n_orders} pending orders) ...", flush=True)
    seeded = seed(env, n_orders)
    # A registry key rotation, first half: the new key published in the registry's bundle.
    old_kid = cli(env, "keys", "list", "--purpose", "registry")
    old_kid = next(k["kid"] for k in old_kid if k["state"] == "signing")
    new_kid = cli(env, "keys", "rotate", "--purpose", "registry")["kid"]
    written = cli(
        env, "registry", "config", "--registry-url", f"http://{registry}",
        "--out", str(tmp / "registry"),
    )  # fmt: skip
    if written["events_url"] != f"http://{HOST}:{lb_port}/registry/events":
        raise SystemExit(f"the registry would notify {written['events_url']}, not the balancer")
    processes: list[subprocess.Popen[bytes]] = []
    hosts: list[subprocess.Popen[bytes]] = []
    logs = []
    failed = 1
    try:
        for i, port in enumerate(ports):
            log = open(tmp / f"host{i + 1}.log", "wb")  # noqa: SIM115
            logs.append(log)
            hosts.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "store.cli.main", "serve"),
                        *("--host", HOST, "--port", str(port), "--workers", str(args.workers)),
                    ],
                    env=env,
                    cwd=tmp,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as a whole
                )
            )
        for port, host in zip(ports, hosts, strict=True):
            _wait_ready(port, host)
        balancer = start_balancer(args, tmp, lb_port, ports)
        processes.append(balancer)
        _wait_ready(lb_port, balancer)
        print(
            f"{args.hosts} hosts :{', :'.join(map(str, ports))} behind {args.balancer} :{lb_port}"
        )
        reg_log = open(tmp / "registry.log", "wb")  # noqa: SIM115
        logs.append(reg_log)
        processes.append(
            subprocess.Popen(
                [registry_bin, "serve", str(tmp / "registry" / "config.yml")],
                cwd=tmp / "registry",
                stdout=reg_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_http(f"http://{registry}/v2/", processes[-1])
        push_image(lb_port, registry, seeded.push_pat)
        print(f"docker-registry :{registry_port}, notifying the store through the balancer")
        problems = []
        limits = check_shared_limits(ports, "buyer0")
        print(f"rate limit shared by the hosts: {'yes' if limits is None else limits}")
        sessions = check_sessions(ports, "buyer1", "x" * 12)
        print(f"a session made on one host valid on the others: {sessions or 'yes'}")
        rotation, took = check_rotation(env, ports, registry, old_kid, new_kid)
        print(
            "a registry key activated through one host signs on every host: "
            + (rotation or f"yes, after {took:.1f} s (STORE_KEYS_REFRESH_SECONDS={KEYS_REFRESH_S})")
        )
        problems += [p for p in (limits, sessions, rotation) if p]
        baseline = pull_count(env)
        kill_at = args.seconds / 2 if args.kill_at is None else args.kill_at
        victim = hosts[-1]

        def kill_last_host() -> None:
            os.killpg(victim.pid, signal.SIGKILL)
            print(f"killed host {args.hosts} (:{ports[-1]}) at {kill_at:g} s", flush=True)

        plan = Plan(seeded)
        print(f"driving {args.rate:g} req/s for {args.seconds:g} s through the balancer")
        load_before = os.getloadavg()[0]
        kill = (kill_at, kill_last_host) if kill_at > 0 else None
        stats = asyncio.run(
            drive(lb_port, plan, args.seconds, args.rate, kill, mix=HOSTS_MIX, registry=registry)
        )
        failed = _report(stats, args, load_before)
        if stats.failed_events:
            print(f"delivering {len(stats.failed_events)} failed payment events again")
            import httpx

            for headers, body in stats.failed_events:
                httpx.post(
                    f"http://{HOST}:{lb_port}/billing/stripe/webhook",
                    headers=headers, content=body, timeout=60,
                )  # fmt: skip
        time.sleep(0.5)
        lost = check_events(env, plan.paid_orders)
        print(f"webhooks: {len(plan.paid_orders)} orders paid by event, ", end="")
        print(f"{len(lost)} lost or doubled" + (f": {lost[:5]}" if lost else ""))
        problems += lost
        pulls = check_pulls(env, baseline, stats.pulls)
        print(f"pulls: {stats.pulls} manifest GETs, " + (pulls or "each counted once"))
        problems += [pulls] if pulls else []
        if failed or problems:
            print(f"logs: {tmp}")
            return 1
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=10)
        for host in hosts:
            if host.poll() is None:
                host.send_signal(signal.SIGTERM)
                try:
                    host.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(host.pid, signal.SIGKILL)
                    host.wait()
        for log in logs:
            log.close()
        drop_pg_database(pg_name)


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the process for {url} exited; see its log")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the process on :{port} exited; see its log")
        try:
            if _get(port, "/readyz").status_code == 200:
                return
        except Exception:  # not listening yet
            time.sleep(0.3)
            continue
        time.sleep(0.3)
    raise SystemExit(f"nothing ready on :{port}")


def _report(stats: Stats, args: argparse.Namespace, load_before: float) -> int:
    print(f"\n{args.backend}, {args.workers} workers, {args.rate:g} req/s for {args.seconds:g} s")
    print(f"{'class':<10}{'requests':>10}{'req/s':>8}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}")
    total_errors = 0
    everything: list[float] = []
    for kind in stats.latencies:
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
    parser.add_argument("--hosts", type=int, default=1, help="store hosts behind a balancer")
    parser.add_argument(
        "--balancer",
        choices=["haproxy", "nginx"],
        default="haproxy",
        help="the balancer in front of the hosts (--hosts): deploy/haproxy or deploy/nginx",
    )
    parser.add_argument(
        "--kill-at", type=float, default=None, help="seconds into the load to kill the last host"
    )
    args = parser.parse_args()
    if args.hosts > 1:
        args.backend = "postgresql"
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    sys.exit(run(args))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
