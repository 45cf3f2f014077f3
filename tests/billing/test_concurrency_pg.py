"""The same webhook delivered at the same moment to two store processes on one PostgreSQL
database: one order transition, one entitlement. A plan change confirmed in two processes at
the same moment: one change, one charge."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from store import PROJECT_DIR
from store.billing import orders
from store.billing.models import Order
from store.billing.runtime import build_billing
from store.db import make_engine, make_sessionmaker, session_scope
from store.idempotency import ProcessedEvent
from store.licensing.models import Entitlement
from tests.billing.helpers import WEBHOOK_SECRET, billing_settings, make_event, sign
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import PG_URL, scratch_database
from tests.servers import uvicorn_apps

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PG_URL, reason="needs STORE_TEST_DATABASE_URL (PostgreSQL)"),
]


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with scratch_database("billing_conc", migrated=True) as url:
        yield url


@pytest.fixture(scope="module")
def two_apps(pg_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    data_dir = tmp_path_factory.mktemp("conc")
    env = {
        **os.environ,
        "STORE_DATABASE_URL": pg_database,
        "STORE_DATA_DIR": str(data_dir),
        "STORE_SECRET_KEY": "concurrency-test-secret-0123456789",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STORE_BILLING_GATEWAY": "test",
        "STORE_BILLING_SWEEP_INTERVAL": "0",
        "PYTHONPATH": str(PROJECT_DIR),
    }
    with uvicorn_apps("tests.billing.concurrency_app:make_app", env) as bases:
        yield bases


def _pending_orders(url: str, n: int) -> list[tuple[str, int]]:
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    billing = build_billing(billing_settings())
    out = []
    with session_scope(factory) as session:
        owner = make_account(session)
        org = make_org(session, owner)
        product = make_product(session, org, owner, tiers=[paid_tier("once", 2500, "one_time")])
        tier = tier_of(product, "once")
        for _ in range(n):
            # One buyer each: a holder has one open purchase of a product.
            buyer = make_account(session)
            order = orders.start_checkout(session, billing, account=buyer, tier=tier)
            out.append((str(order.id), order.total_minor))
    engine.dispose()
    return out


def _post_together(bases: list[str], bodies: list[str]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bases))
    results: list[Any] = [None] * len(bases)

    def send(i: int) -> None:
        body = bodies[i]
        headers = {"Stripe-Signature": sign(body), "Content-Type": "application/json"}
        with httpx.Client(timeout=30) as client:
            barrier.wait()
            results[i] = client.post(
                f"{bases[i]}/billing/stripe/webhook", content=body, headers=headers
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _intent(order_id: str, amount: int) -> dict[str, Any]:
    return {
        "id": f"pi_conc_{order_id[:8]}",
        "object": "payment_intent",
        "amount": amount,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {"order_id": order_id},
    }


def test_same_event_to_two_processes(pg_database: str, two_apps: list[str]) -> None:
    rounds = _pending_orders(pg_database, 8)
    engine = make_engine(pg_database)
    try:
        for order_id, amount in rounds:
            event = make_event("payment_intent.succeeded", _intent(order_id, amount))
            body = json.dumps(event)
            responses = _post_together(two_apps, [body, body])
            assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
            assert sorted(r.json()["status"] for r in responses) == ["duplicate", "processed"]
            with engine.connect() as conn:
                assert (
                    conn.scalar(
                        select(func.count())
                        .select_from(ProcessedEvent)
                        .where(ProcessedEvent.event_id == event["id"])
                    )
                    == 1
                )
                assert (
                    conn.scalar(
                        select(func.count())
                        .select_from(Entitlement)
                        .where(Entitlement.source_ref == order_id)
                    )
                    == 1
                )
                assert conn.scalar(select(Order.status).where(Order.id == order_id)) == "paid"
    finally:
        engine.dispose()


def test_two_events_for_one_order_at_once(pg_database: str, two_apps: list[str]) -> None:
    """Different event ids (Stripe's retry of a new event, or two event types) for the same
    payment: the order row lock makes one of them the transition."""
    rounds = _pending_orders(pg_database, 5)
    engine = make_engine(pg_database)
    try:
        for order_id, amount in rounds:
            bodies = [
                json.dumps(make_event("payment_intent.succeeded", _intent(order_id, amount)))
                for _ in two_apps
            ]
            responses = _post_together(two_apps, bodies)
            assert [r.json()["status"] for r in responses] == ["processed", "processed"]
            with engine.connect() as conn:
                assert (
                    conn.scalar(
                        select(func.count())
                        .select_from(Entitlement)
                        .where(Entitlement.source_ref == order_id)
                    )
                    == 1
                )
                assert (
                    conn.scalar(select(Order.entitlement_id).where(Order.id == order_id))
                    is not None
                )
    finally:
        engine.dispose()


def _subscribers(url: str, n: int) -> tuple[str, list[tuple[str, str]]]:
    """``n`` buyers with a running basic subscription (half of its period used) and an API
    token each; the pro tier's id."""
    from datetime import timedelta

    from store.billing.gateway import PaymentInput
    from store.billing.models import Subscription
    from store.billing.test_gateway import CARD_SUCCESS
    from store.db import utcnow
    from tests.factories import api_token

    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    billing = build_billing(billing_settings())
    out = []
    with session_scope(factory) as session:
        owner = make_account(session)
        org = make_org(session, owner)
        product = make_product(
            session,
            org,
            owner,
            tiers=[paid_tier("basic", 1000, "month"), paid_tier("pro", 3000, "month")],
        )
        basic, pro = tier_of(product, "basic"), tier_of(product, "pro")
        for _ in range(n):
            buyer = make_account(session)
            order = orders.start_checkout(session, billing, account=buyer, tier=basic)
            orders.pay(
                session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS)
            )
            sub = session.get(Subscription, order.subscription_id)
            assert sub is not None and sub.status == "active"
            sub.current_period_start = utcnow() - timedelta(days=15)
            sub.current_period_end = utcnow() + timedelta(days=15)
            out.append((str(sub.id), api_token(session, buyer)))
        pro_id = str(pro.id)
    engine.dispose()
    return pro_id, out


def _change_together(
    bases: list[str], sub_id: str, token: str, tier_id: str, n: int
) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bases))
    results: list[Any] = [None] * len(bases)

    def send(i: int) -> None:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"tab-{i}-{n:04d}"}
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            results[i] = client.post(
                f"{bases[i]}/api/v1/billing/subscriptions/{sub_id}/change",
                json={"tier_id": tier_id},
                headers=headers,
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_plan_change_in_two_processes_at_once(pg_database: str, two_apps: list[str]) -> None:
    """Two tabs confirming the same plan change, each request to another process: the
    subscription's row lock and the one-pending-change index make one the change; the other
    finds it in progress or made."""
    from store.billing.models import PlanChange

    pro_id, rounds = _subscribers(pg_database, 5)
    engine = make_engine(pg_database)
    try:
        for n, (sub_id, token) in enumerate(rounds):
            results = _change_together(two_apps, sub_id, token, pro_id, n)
            codes = sorted(r.status_code for r in results)
            assert codes in ([200, 409], [200, 422]), [r.text for r in results]
            refused = next(r for r in results if r.status_code != 200)
            # The other found the change in progress, or already made.
            assert refused.json()["error"] in ("change_in_progress", "same_plan")
            with engine.connect() as conn:
                changes = conn.scalar(
                    select(func.count())
                    .select_from(PlanChange)
                    .where(PlanChange.subscription_id == sub_id)
                )
                paid = conn.scalar(
                    select(func.count())
                    .select_from(Order)
                    .where(Order.subscription_id == sub_id, Order.paid_at.is_not(None))
                )
                assert (changes, paid) == (1, 2)
    finally:
        engine.dispose()
