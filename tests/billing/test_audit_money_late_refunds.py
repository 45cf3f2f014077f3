"""A renewal refunded at the gateway whose refund is delivered before its payment, after
deliveries failed for a while (both events older than the window in which an unknown
invoice is answered "retry later"): the refund is applied, never acknowledged and lost."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event

MONTH = 30 * 86400


def test_a_renewal_refund_told_before_the_renewal_long_after_is_applied(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.current_period_end is not None
    end1 = int(sub.current_period_end.timestamp())
    renewal: dict[str, Any] = {
        "id": "in_renewal_refunded",
        "object": "invoice",
        "status": "paid",
        "amount_paid": 4900,
        "amount_due": 4900,
        "currency": "usd",
        "payment_intent": "pi_renewal_refunded",
        "lines": {"data": [{"period": {"start": end1, "end": end1 + MONTH}}]},
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }
    # The gateway has the renewal, paid; its invoice.paid has not been delivered yet.
    monkeypatch.setattr(
        billing.gateway, "fetch_invoice", lambda ref: renewal if ref == renewal["id"] else None
    )
    charge = {
        "id": "ch_renewal_refunded",
        "object": "charge",
        "amount": 4900,
        "amount_refunded": 4900,
        "refunded": True,
        "payment_intent": renewal["payment_intent"],
        "invoice": renewal["id"],
    }
    long_ago = int(time.time()) - 3600
    r = post_event(client, make_event("charge.refunded", charge, created=long_ago + 60))
    assert r.status_code == 200, r.text
    # Its payment's event comes after, redelivered too.
    post_event(client, make_event("invoice.paid", renewal, created=long_ago))

    session.expire_all()
    paid = session.scalars(select(Order).where(Order.gateway_ref == renewal["id"])).all()
    assert len(paid) == 1 and paid[0].status == "refunded" and paid[0].refunded_minor == 4900
    sub = session.get(Subscription, sub.id)
    assert sub is not None and sub.end_requested == "now"  # billing stops
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.status == "revoked"
