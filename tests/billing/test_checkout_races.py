"""Charged once: pairs of simultaneous checkouts for the same holder and tier through a real
`store serve --workers 2` (two processes) on Stripe (localstripe), on PostgreSQL and SQLite.
Each pair makes exactly one purchase and one charge; the other answer is 409 already_owned;
nothing answers 5xx and no gateway object is left over (customers, payments, subscriptions).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stripe
from sqlalchemy import func, select

from store import migrate
from store.billing.models import GatewayCustomer, Order, Subscription
from store.db import make_engine, make_sessionmaker, session_scope
from tests.billing.stripe_env import SECRET_KEY, WEBHOOK_SECRET, LocalStripe
from tests.e2e.registry_env import clean_env, free_port, wait_http
from tests.factories import api_token, make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import empty_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PAIRS = 20


@dataclass
class Seeded:
    tokens: list[str]
    tiers: list[str]  # the tier each pair buys


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_database(request.param, tmp_path, "checkout_races") as url:
        yield url


def _seed(database_url: str) -> Seeded:
    engine = make_engine(database_url)
    try:
        migrate.upgrade(engine)
        with session_scope(make_sessionmaker(engine)) as session:
            publisher = make_account(session, "racepub")
            org = make_org(session, publisher)
            product = make_product(
                session,
                org,
                publisher,
                tiers=[paid_tier("lifetime", 9900, "one_time"), paid_tier("pro", 4900, "month")],
            )
            tiers = [str(tier_of(product, "lifetime").id), str(tier_of(product, "pro").id)]
            buyers = [make_account(session, f"racer{i}") for i in range(PAIRS)]
            tokens = [api_token(session, buyer) for buyer in buyers]
    finally:
        engine.dispose()
    return Seeded(tokens, [tiers[i % 2] for i in range(PAIRS)])


@pytest.fixture
def server(
    database_url: str, tmp_path: Path, localstripe: LocalStripe
) -> Iterator[tuple[str, Seeded, Path]]:
    localstripe.flush()
    seeded = _seed(database_url)
    port = free_port()
    env = clean_env(
        {
            "STORE_DATA_DIR": str(tmp_path / "data"),
            "STORE_DATABASE_URL": database_url,
            "STORE_SECRET_KEY": "checkout-race-secret-0123456789abcdef",
            "STORE_ENVIRONMENT": "test",
            "STORE_BILLING_GATEWAY": "stripe",
            "STORE_BILLING_SWEEP_INTERVAL": "0",
            "STRIPE_SECRET_KEY": SECRET_KEY,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_races",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STRIPE_API_BASE": localstripe.base,
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", "2", "--log-level", "warning"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", timeout=120, proc=proc)
        yield base, seeded, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _pairs(base: str, seeded: Seeded) -> list[list[tuple[int, str]]]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def checkout(token: str, tier: str) -> tuple[int, str]:
            r = await client.post(
                "/api/v1/billing/checkout",
                json={"tier_id": tier, "payment_method": "pm_card_visa"},
                headers={"Authorization": f"Bearer {token}"},
            )
            return r.status_code, r.text[:400]

        async def pair(token: str, tier: str) -> list[tuple[int, str]]:
            return list(await asyncio.gather(checkout(token, tier), checkout(token, tier)))

        return list(
            await asyncio.gather(
                *(pair(t, tier) for t, tier in zip(seeded.tokens, seeded.tiers, strict=True))
            )
        )


def test_simultaneous_checkouts_charge_once(
    server: tuple[str, Seeded, Path], database_url: str, localstripe: LocalStripe
) -> None:
    base, seeded, log = server
    results = asyncio.run(_pairs(base, seeded))

    errors = [r for pair in results for r in pair if r[0] >= 500]
    assert errors == [], (errors[:3], log.read_text()[-3000:])
    for pair in results:
        assert sorted(status for status, _ in pair) == [201, 409], pair
        conflict = next(text for status, text in pair if status == 409)
        assert '"already_owned"' in conflict

    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            open_orders = session.scalar(
                select(func.count()).select_from(Order).where(Order.status != "failed")
            )
            assert open_orders == PAIRS
            assert session.scalar(select(func.count()).select_from(GatewayCustomer)) == PAIRS
            assert session.scalar(select(func.count()).select_from(Subscription)) == PAIRS // 2
    finally:
        engine.dispose()

    v1 = stripe.StripeClient(
        SECRET_KEY, base_addresses={"api": localstripe.base}, max_network_retries=0
    ).v1
    customers = list(v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len(customers) == PAIRS  # no orphan customer
    charges = [len(v1.charges.list({"customer": c.id}).data) for c in customers]
    assert charges == [1] * PAIRS  # exactly one charge per holder
    intents = list(v1.payment_intents.list({"limit": 100}).auto_paging_iter())
    assert len(intents) == PAIRS
    subs = list(v1.subscriptions.list({"limit": 100}).auto_paging_iter())
    assert len(subs) == PAIRS // 2 and len({s["customer"] for s in subs}) == PAIRS // 2
