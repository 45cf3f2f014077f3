"""A subscription's renewal events in any order, any of them twice: a renewal that fails
then is paid, status updates, a refund of the renewal, the subscription's deletion.
Access always runs to the end of the last paid period, never further; one order per
invoice; a refunded renewal takes the access back and stops billing."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event
from tests.billing.test_audit_money_event_orders import _deliver
from tests.factories import make_account

KINDS = ("failed", "past_due", "paid", "active", "refunded", "deleted")
MONTH = 30 * 86400


def _events(sub: Subscription, kinds: list[str]) -> list[dict[str, Any]]:
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    p2 = p1 + MONTH
    renewed = "paid" in kinds
    invoice = {
        "id": "in_2_" + sub.id.hex[:8],
        "object": "invoice",
        "amount_paid": 4900,
        "amount_due": 4900,
        "currency": "usd",
        "payment_intent": "pi_2_" + sub.id.hex[:8],
        "lines": {"data": [{"period": {"start": p1, "end": p2}}]},
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }

    def snapshot(status: str, end: int) -> dict[str, Any]:
        return {
            "id": sub.gateway_ref,
            "object": "subscription",
            "status": status,
            "cancel_at_period_end": False,
            "metadata": {"subscription_id": str(sub.id)},
            "items": {"data": [{"id": "si_1", "current_period_end": end}]},
        }

    made = {
        "failed": ("invoice.payment_failed", {**invoice, "amount_paid": 0}, p1 + 1),
        "past_due": ("customer.subscription.updated", snapshot("past_due", p1), p1 + 2),
        "paid": ("invoice.paid", invoice, p1 + 3),
        "active": ("customer.subscription.updated", snapshot("active", p2), p1 + 4),
        "refunded": (
            "charge.refunded",
            {
                "id": "ch_2_" + sub.id.hex[:8],
                "object": "charge",
                "amount": 4900,
                "amount_refunded": 4900,
                "refunded": True,
                "payment_intent": invoice["payment_intent"],
                "invoice": invoice["id"],
            },
            p1 + 5,
        ),
        "deleted": (
            "customer.subscription.deleted",
            {**snapshot("canceled", p2 if renewed else p1), "canceled_at": p1 + 6},
            p1 + 6,
        ),
    }
    # Told in this order, just after the checkout's own events.
    told = int(time.time()) + 1 - p1
    return [make_event(made[k][0], made[k][1], created=made[k][2] + told) for k in kinds]


STATUS_AT = {"failed": "past_due", "past_due": "past_due", "paid": "active", "active": "active"}

scenarios = st.fixed_dictionaries(
    {
        "kinds": st.lists(st.sampled_from(KINDS), unique=True),
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
def test_any_order_of_renewal_events_gives_access_to_what_was_paid(
    session: Session, billing: Billing, shop: Shop, scenario: dict[str, Any]
) -> None:
    # An update to the renewed period, or a refund of the renewal, only follow its payment.
    drawn: list[str] = scenario["kinds"]
    kinds = [k for k in drawn if k not in ("active", "refunded") or "paid" in drawn]
    buyer = make_account(session)
    order = orders.start_checkout(session, billing, account=buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.current_period_end is not None
    p1 = sub.current_period_end
    events = _events(sub, kinds)
    events += [e for e, k in zip(list(events), kinds, strict=True) if k in scenario["twice"]]
    scenario["order"].shuffle(events)
    _deliver(session, billing, events)
    session.commit()
    session.expire_all()

    sub = session.get(Subscription, sub.id)
    assert sub is not None
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None
    renewed = "paid" in kinds
    end = int(ent.ends_at.timestamp()) if ent.ends_at else None
    assert end == int(p1.timestamp()) + (MONTH if renewed else 0), kinds
    invoice_orders = session.scalars(
        select(Order).where(Order.subscription_id == sub.id, Order.id != order.id)
    ).all()
    assert len(invoice_orders) == (1 if {"paid", "failed"} & set(kinds) else 0), kinds
    assert sub.paid_charges == 1 + renewed
    if "refunded" in kinds:
        assert ent.status == "revoked" and invoice_orders[0].status == "refunded"
        # Billing stops at once (unless it had already)
        assert sub.end_requested == "now" or sub.status in ("canceled", "expired"), kinds
        return
    assert ent.status == "active", kinds
    if "deleted" in kinds:
        assert sub.status in ("canceled", "expired") and ent.grace_until is None, kinds
        return
    timed = [k for k in KINDS if k in kinds and k in STATUS_AT]
    expected = STATUS_AT[timed[-1]] if timed else "active"
    assert sub.status == expected, kinds
    assert (ent.grace_until is not None) == (expected == "past_due"), kinds


# --- seats changed at the gateway, renewals paid short --------------------------------------

UNIT, SEATS, BOUGHT = 4900, 2, 3
SEAT_KINDS = ("decrease", "increase", "paid", "active")
GATEWAY_QUANTITY = {"decrease": 2, "increase": 5}


def _seat_events(
    sub: Subscription, kinds: list[str], short: bool
) -> tuple[list[dict[str, Any]], int]:
    """The events of ``kinds`` (seats lowered to 2, then raised to 5 at the gateway; the
    renewal invoiced at the quantity the gateway had then, paid in full or ``short``; the
    update to the renewed period), and the quantity the renewal charged for."""
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    p2 = p1 + MONTH
    changes = [k for k in ("decrease", "increase") if k in kinds]
    invoiced = GATEWAY_QUANTITY[changes[-1]] if changes else BOUGHT
    paid = UNIT * invoiced - (100 if short else 0)
    invoice = {
        "id": "in_2_" + sub.id.hex[:8],
        "object": "invoice",
        "amount_paid": paid,
        "amount_due": paid,
        "currency": "usd",
        "payment_intent": "pi_2_" + sub.id.hex[:8],
        "lines": {
            "data": [
                {
                    "type": "subscription",
                    "quantity": invoiced,
                    "amount": UNIT * invoiced,
                    "period": {"start": p1, "end": p2},
                }
            ]
        },
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }

    def snapshot(quantity: int, end: int) -> dict[str, Any]:
        return {
            "id": sub.gateway_ref,
            "object": "subscription",
            "status": "active",
            "cancel_at_period_end": False,
            "metadata": {"subscription_id": str(sub.id)},
            "items": {"data": [{"id": "si_1", "quantity": quantity, "current_period_end": end}]},
        }

    made = {
        "decrease": ("customer.subscription.updated", snapshot(2, p1), p1 - 20),
        "increase": ("customer.subscription.updated", snapshot(5, p1), p1 - 10),
        "paid": ("invoice.paid", invoice, p1 + 3),
        "active": ("customer.subscription.updated", snapshot(invoiced, p2), p1 + 4),
    }
    told = int(time.time()) + 30 - p1  # all after the checkout's own events, in this order
    events = [make_event(made[k][0], made[k][1], created=made[k][2] + told) for k in kinds]
    return events, invoiced


seat_scenarios = st.fixed_dictionaries(
    {
        "kinds": st.lists(st.sampled_from(SEAT_KINDS), unique=True),
        "short": st.booleans(),
        "twice": st.sets(st.sampled_from(SEAT_KINDS)),
        "order": st.randoms(use_true_random=False),
    }
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=seat_scenarios)
def test_seats_and_access_never_exceed_what_was_paid(
    session: Session, billing: Billing, shop: Shop, scenario: dict[str, Any]
) -> None:
    drawn: list[str] = scenario["kinds"]
    kinds = [k for k in drawn if k != "active" or "paid" in drawn]
    short = scenario["short"] and "paid" in kinds
    shop.monthly.seats = SEATS
    buyer = make_account(session)
    order = orders.start_checkout(
        session, billing, account=buyer, tier=shop.monthly, quantity=BOUGHT
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.current_period_end is not None
    p1 = sub.current_period_end
    events, invoiced = _seat_events(sub, kinds, short)
    events += [e for e, k in zip(list(events), kinds, strict=True) if k in scenario["twice"]]
    scenario["order"].shuffle(events)
    _deliver(session, billing, events)
    session.commit()
    session.expire_all()

    sub = session.get(Subscription, sub.id)
    assert sub is not None
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.status == "active"
    renewed = "paid" in kinds and not short
    # The quantity last paid for, and what the gateway's newest event says it has now.
    paid_for = invoiced if renewed else BOUGHT
    newest = [k for k in SEAT_KINDS if k in kinds]
    gateway = (
        invoiced
        if newest and newest[-1] in ("paid", "active")
        else (GATEWAY_QUANTITY[newest[-1]] if newest else BOUGHT)
    )
    if short and newest[-1] == "paid":  # a held invoice says nothing about the quantity
        changes = [k for k in ("decrease", "increase") if k in kinds]
        gateway = GATEWAY_QUANTITY[changes[-1]] if changes else BOUGHT
    assert sub.quantity == min(paid_for, gateway), (kinds, short)
    assert ent.seats == SEATS * min(paid_for, gateway), (kinds, short)
    assert ent.seats <= SEATS * paid_for
    end = int(ent.ends_at.timestamp()) if ent.ends_at else None
    assert end == int(p1.timestamp()) + (MONTH if renewed else 0), (kinds, short)
    # Each paid invoice fulfilled once: one order, counted once; a short one held.
    invoice_orders = session.scalars(
        select(Order).where(Order.subscription_id == sub.id, Order.id != order.id)
    ).all()
    assert len(invoice_orders) == (1 if "paid" in kinds else 0)
    assert sub.paid_charges == 1 + renewed
    if "paid" in kinds:
        assert invoice_orders[0].status == ("review" if short else "paid")
        assert invoice_orders[0].quantity == invoiced
    assert (ent.grace_until is not None) == short, (kinds, short)
