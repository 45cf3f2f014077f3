"""A one-time order's payment events in any order, any of them twice: whatever Stripe
delivers, the order ends where the events say, and so does the access it sold.

Each example is one buyer's order, with a payment that may fail first, refunds (partial,
then full), and a dispute (opened, then won or lost), delivered shuffled and repeated;
an event answered "retry later" is delivered again after the others, as Stripe does."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing import orders, webhooks
from store.billing.models import Order, Refund
from store.billing.runtime import Billing
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event
from tests.factories import make_account

TOTAL = 9900
KINDS = ("failed", "paid", "partial_refund", "full_refund", "dispute_opened", "dispute_closed")


def _objects(order: Order, pi: str, won: bool) -> dict[str, tuple[str, dict[str, Any], int]]:
    charge = {"id": "ch_" + pi[3:], "object": "charge", "amount": TOTAL, "payment_intent": pi}
    intent = {
        "id": pi,
        "object": "payment_intent",
        "amount": TOTAL,
        "currency": order.currency,
        "metadata": {"order_id": str(order.id)},
    }
    dispute = {"id": "dp_" + pi[3:], "object": "dispute", "charge": charge, "payment_intent": pi}
    return {  # kind: (event type, object, seconds after the checkout it happened)
        "failed": (
            "payment_intent.payment_failed",
            {**intent, "status": "requires_payment_method"},
            5,
        ),
        "paid": ("payment_intent.succeeded", {**intent, "status": "succeeded"}, 10),
        "partial_refund": (
            "charge.refunded",
            {**charge, "amount_refunded": 2000, "refunded": False},
            20,
        ),
        "full_refund": (
            "charge.refunded",
            {**charge, "amount_refunded": TOTAL, "refunded": True},
            30,
        ),
        "dispute_opened": ("charge.dispute.created", {**dispute, "status": "needs_response"}, 40),
        "dispute_closed": (
            "charge.dispute.closed",
            {**dispute, "status": "won" if won else "lost"},
            50,
        ),
    }


def _deliver(session: Session, billing: Billing, events: list[dict[str, Any]]) -> None:
    queue = list(events)
    for _ in range(4 * len(events) + 4):
        if not queue:
            return
        event = queue.pop(0)
        try:
            with session.begin_nested():
                webhooks.process_event(session, billing, event)
        except webhooks.RetryLater:
            queue.append(event)  # redelivered later
    raise AssertionError(f"never applied: {[e['type'] for e in queue]}")


scenarios = st.fixed_dictionaries(
    {
        "kinds": st.lists(st.sampled_from(KINDS), unique=True),
        "won": st.booleans(),
        "twice": st.sets(st.sampled_from(KINDS)),
        "order": st.randoms(use_true_random=False),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios)
def test_any_order_of_payment_events_ends_where_they_say(
    session: Session, billing: Billing, shop: Shop, scenario: dict[str, Any]
) -> None:
    buyer = make_account(session)
    order = orders.start_checkout(session, billing, account=buyer, tier=shop.one_time)
    pi = "pi_" + uuid.uuid4().hex[:20]
    order.payment_ref = pi  # as the gateway's answer to the checkout records it
    session.commit()
    assert order.total_minor == TOTAL
    base = int(order.created_at.timestamp())
    objects = _objects(order, pi, scenario["won"])
    kinds: list[str] = scenario["kinds"]
    events = []
    for kind in kinds:
        type_, obj, offset = objects[kind]
        event = make_event(type_, obj, created=base + offset)
        events += [event, event] if kind in scenario["twice"] else [event]
    scenario["order"].shuffle(events)
    _deliver(session, billing, events)
    session.commit()
    session.expire_all()

    order = session.get(Order, order.id)
    assert order is not None
    refunded = TOTAL if "full_refund" in kinds else 2000 if "partial_refund" in kinds else 0
    assert order.refunded_minor == refunded
    rows = session.scalar(select(func.sum(Refund.amount_minor)).where(Refund.order_id == order.id))
    assert (rows or 0) == refunded
    held = session.scalars(select(Entitlement).where(Entitlement.source_ref == str(order.id))).all()
    if "paid" not in kinds:
        assert order.paid_at is None and held == []
        assert order.status == ("failed" if "failed" in kinds else "pending")
        return
    assert order.paid_at is not None and order.receipt_number
    assert order.status == {0: "paid", 2000: "partially_refunded", TOTAL: "refunded"}[refunded]
    assert len(held) == 1 and order.entitlement_id == held[0].id
    lost = "dispute_closed" in kinds and not scenario["won"]
    if refunded == TOTAL or lost:
        expected = "revoked"
    elif "dispute_opened" in kinds and "dispute_closed" not in kinds:
        expected = "suspended"  # its money may be taken back
    else:
        expected = "active"
    assert held[0].status == expected, (kinds, scenario["won"])
