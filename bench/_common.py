"""What the benches share: free loopback ports, a clean environment for the store's
processes, a throw-away PostgreSQL database, waiting for a server, the seeded shop (a
publisher, a paid product, an entitled customer), the load average and percentiles."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PASSWORD = "bench password 123"
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile by nearest rank: the smallest value with at least ``p`` % of
    the values at or below it (p90 of 20 values: the 18th smallest)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(p / 100 * len(ordered)))) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def store_env(data_dir: Path, secret_key: str, port: int) -> dict[str, str]:
    """This process's environment without its own STORE_* settings (nor a metrics
    directory of its own), for a store on ``port`` with a fresh ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        STORE_DATA_DIR=str(data_dir),
        STORE_SECRET_KEY=secret_key,
        STORE_PUBLIC_URL=f"http://{HOST}:{port}",
        PYTHONPATH=str(ROOT),
    )
    return env


def _admin_engine() -> Any:
    from store.db import make_engine

    return make_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )


def create_pg_database(name: str) -> str:
    """A new, empty database ``name`` beside BENCH_PG_URL's (dropped first if left over)."""
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


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    """Until ``url`` answers at all (SystemExit when the process ends or time runs out)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the process for {url} exited; see its log")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


def seed_shop(env: dict[str, str], *, key_purposes: tuple[str, ...]) -> tuple[str, str]:
    """Migrate the store of ``env`` and seed it: alice owns acme and publishes acme/app with
    a monthly tier bob is granted; signing keys for ``key_purposes``. Alice's push token
    and bob's pull token (personal access tokens)."""
    from store import followers, migrate
    from store.accounts import service as accounts
    from store.catalog import service as catalog
    from store.config import Settings
    from store.db import make_engine, make_sessionmaker, session_scope, utcnow
    from store.keys import service as keys
    from store.licensing import entitlements

    settings = Settings(
        data_dir=Path(env["STORE_DATA_DIR"]),
        database_url=env.get("STORE_DATABASE_URL"),
        secret_key=env["STORE_SECRET_KEY"],
    )
    settings.ensure_data_dir()
    followers.install()  # the registry and billing follow catalog edits, as in the store
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        alice = accounts.create_account(
            session, username="alice", email="alice@example.com", password=PASSWORD
        )
        alice.email_verified_at = utcnow()  # publishing needs a confirmed address
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
        for purpose in key_purposes:
            keys.ensure_key(session, purpose=purpose, secret=settings.resolved_secret_key)
        push = accounts.create_token(
            session, kind="personal", name="push", scopes=["pull", "push"], created_by=alice
        ).secret
        pull = accounts.create_token(
            session, kind="personal", name="pull", scopes=["pull"], created_by=bob
        ).secret
    engine.dispose()
    return push, pull


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
