"""Payments that complete after their checkout was closed, while the buyer already holds
the product by another checkout: one purchase, the other payment returned."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.models import Order, Refund
from store.billing.runtime import Billing
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event


def intent(order: Order, status: str = "succeeded", **extra: Any) -> dict[str, Any]:
    return {
        "id": "pi_late_" + order.id.hex[:12],
        "object": "payment_intent",
        "amount": order.total_minor,
        "currency": order.currency,
        "status": status,
        "metadata": {"order_id": str(order.id)},
        **extra,
    }


def fresh(session: Session, obj: Any) -> Any:
    session.expire_all()
    return session.get(type(obj), obj.id)


def closed_then_bought_again(session: Session, billing: Billing, shop: Shop) -> tuple[Order, Order]:
    """A checkout left unpaid past the abandonment delay, then a second one that closes it."""
    first = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    session.commit()
    session.execute(
        update(Order)
        .where(Order.id == first.id)
        .values(created_at=first.created_at - timedelta(hours=1))
    )
    session.commit()
    second = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    session.commit()
    assert fresh(session, first).status == "failed"
    return first, second


def usable(session: Session, shop: Shop) -> list[Entitlement]:
    session.expire_all()
    return [
        e
        for e in session.scalars(select(Entitlement).where(Entitlement.account_id == shop.buyer.id))
        if e.status == "active"
    ]


def test_a_closed_checkout_paid_after_the_next_one_is_refunded_not_sold_twice(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    first, second = closed_then_bought_again(session, billing, shop)
    assert (
        post_event(client, make_event("payment_intent.succeeded", intent(second))).json()["status"]
        == "processed"
    )
    # The first checkout's payment page, left open, completes its payment anyway.
    late = make_event("payment_intent.succeeded", intent(first))
    r = post_event(client, late)
    assert r.status_code == 200, r.text
    assert post_event(client, late).json()["status"] == "duplicate"
    first, second = fresh(session, first), fresh(session, second)
    assert second.status == "paid"
    assert first.status == "refunded" and first.refunded_minor == first.total_minor == 9900
    assert first.entitlement_id is None and first.receipt_number is None
    assert sum(r.amount_minor for r in session.scalars(select(Refund))) == 9900
    assert len(usable(session, shop)) == 1


def test_a_closed_checkout_paid_while_the_next_one_is_unpaid_is_refunded(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    first, second = closed_then_bought_again(session, billing, shop)
    r = post_event(client, make_event("payment_intent.succeeded", intent(first)))
    assert r.status_code == 200, r.text
    first = fresh(session, first)
    assert first.status == "refunded" and first.refunded_minor == 9900
    assert usable(session, shop) == []
    # The checkout in progress is still the one that sells it.
    post_event(client, make_event("payment_intent.succeeded", intent(second)))
    assert fresh(session, second).status == "paid"
    assert len(usable(session, shop)) == 1


def test_a_closed_checkout_paid_with_nothing_else_open_is_still_sold(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    first, second = closed_then_bought_again(session, billing, shop)
    post_event(
        client,
        make_event("payment_intent.payment_failed", intent(second, "requires_payment_method")),
    )
    post_event(client, make_event("payment_intent.succeeded", intent(first)))
    assert fresh(session, first).status == "paid"
    assert len(usable(session, shop)) == 1
