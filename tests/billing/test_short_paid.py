"""An invoice paid for less than the store's quote (a coupon or another price applied in
Stripe's dashboard) is held for review, as a one-time order paid short is: a renewal does
not extend access (the buyer keeps the grace period of a failed renewal), a first invoice
gives none; told again, nothing changes. Paid as quoted, or more, it is fulfilled."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.audit.models import AuditEvent
from store.billing import orders, webhooks
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_AUTHENTICATE, CARD_SUCCESS
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event

MONTH = 30 * 86400


def _subscribed(session: Session, billing: Billing, shop: Shop) -> Subscription:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.current_period_end is not None
    return sub


def _invoice(sub: Subscription, amount: int, start: int, end: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": "in_" + uuid.uuid4().hex[:16],
        "object": "invoice",
        "amount_paid": amount,
        "amount_due": amount,
        "currency": "usd",
        "payment_intent": "pi_" + uuid.uuid4().hex[:16],
        "lines": {"data": [{"period": {"start": start, "end": end}}]},
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
        **extra,
    }


def _tell(session: Session, billing: Billing, type_: str, obj: dict[str, Any]) -> None:
    webhooks.process_event(session, billing, make_event(type_, obj, created=int(time.time())))
    session.commit()
    session.expire_all()


def _renewal_orders(session: Session, sub: Subscription) -> list[Order]:
    return list(
        session.scalars(
            select(Order)
            .where(Order.subscription_id == sub.id, Order.holder_key.is_(None))
            .order_by(Order.created_at)
        )
    )


def test_a_renewal_paid_short_is_held_and_does_not_extend_access(
    session: Session, billing: Billing, shop: Shop
) -> None:
    sub = _subscribed(session, billing, shop)
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    invoice = _invoice(sub, 2450, p1, p1 + MONTH)  # half off, applied in the dashboard
    _tell(session, billing, "invoice.paid", invoice)
    _tell(session, billing, "invoice.paid", invoice)  # told twice

    sub = session.get(Subscription, sub.id)
    assert sub is not None
    [renewal] = _renewal_orders(session, sub)
    assert renewal.status == "review" and renewal.paid_at is None
    assert renewal.failure_reason == "Paid 2450 usd, expected 4900 usd"
    assert renewal.receipt_number is None
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at is not None
    assert int(ent.ends_at.timestamp()) == p1  # not the invoice's period
    assert ent.grace_until is not None  # a failed renewal's grace, not a paid period
    assert ent.grace_until <= ent.ends_at + timedelta(days=billing.settings.grace_days + 1)
    assert sub.paid_charges == 1
    alerts = session.scalars(
        select(AuditEvent).where(
            AuditEvent.action == "order.review", AuditEvent.target_id == str(renewal.id)
        )
    ).all()
    assert len(alerts) == 1


def test_a_renewal_paid_as_quoted_or_more_is_fulfilled(
    session: Session, billing: Billing, shop: Shop
) -> None:
    sub = _subscribed(session, billing, shop)
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    _tell(session, billing, "invoice.paid", _invoice(sub, 4900, p1, p1 + MONTH))
    _tell(session, billing, "invoice.paid", _invoice(sub, 5000, p1 + MONTH, p1 + 2 * MONTH))
    sub = session.get(Subscription, sub.id)
    assert sub is not None
    assert [o.status for o in _renewal_orders(session, sub)] == ["paid", "paid"]
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at is not None and ent.grace_until is None
    assert int(ent.ends_at.timestamp()) == p1 + 2 * MONTH
    assert sub.paid_charges == 3


def test_a_renewal_in_another_currency_is_held(
    session: Session, billing: Billing, shop: Shop
) -> None:
    sub = _subscribed(session, billing, shop)
    assert sub.current_period_end is not None
    p1 = int(sub.current_period_end.timestamp())
    _tell(session, billing, "invoice.paid", _invoice(sub, 4900, p1, p1 + MONTH, currency="jpy"))
    sub = session.get(Subscription, sub.id)
    assert sub is not None
    [renewal] = _renewal_orders(session, sub)
    assert renewal.status == "review"
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at is not None
    assert int(ent.ends_at.timestamp()) == p1


def test_a_first_invoice_paid_short_gives_no_access(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_AUTHENTICATE))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "incomplete" and order.gateway_ref is not None
    now = int(time.time())
    snapshot = {
        "id": sub.gateway_ref,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": {"subscription_id": str(sub.id)},
        "items": {"data": [{"id": "si_1", "current_period_end": now + MONTH}]},
    }
    invoice = {**_invoice(sub, 100, now, now + MONTH), "id": order.gateway_ref}
    # In both orders: the gateway calls it active whatever the store thinks of the payment.
    _tell(session, billing, "invoice.paid", invoice)
    _tell(session, billing, "customer.subscription.updated", snapshot)
    order = session.get(Order, order.id)
    sub = session.get(Subscription, sub.id)
    assert order is not None and sub is not None
    assert order.status == "review" and order.paid_at is None
    assert order.failure_reason == "Paid 100 usd, expected 4900 usd"
    assert sub.entitlement_id is None
    held = session.scalars(select(Entitlement).where(Entitlement.source_ref == str(sub.id))).all()
    assert held == []
