"""A subscription the store closed before its first payment (the gateway did not answer
the checkout, or the product was withdrawn meanwhile) whose first invoice is paid at the
gateway after all: billing stops there and the payment is returned; nothing is sold, and
the buyer is never left paying for a subscription the store shows as ended."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.gateway import GatewayError, PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.db import utcnow
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event

MONTH = 30 * 86400


def test_a_first_invoice_paid_after_the_checkout_was_closed_is_refunded_and_canceled(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    session.commit()

    def no_answer(*args: Any, **kwargs: Any) -> Any:
        raise GatewayError("timed out")  # the subscription was made there all the same

    monkeypatch.setattr(billing.gateway, "subscribe", no_answer)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "canceled" and sub.gateway_ref is None

    canceled: list[str | None] = []
    monkeypatch.setattr(
        billing.gateway,
        "cancel_now",
        lambda session, billing, *, subscription: canceled.append(subscription.gateway_ref),
    )
    start = int(utcnow().timestamp())
    first = {
        "id": "in_unanswered_first",
        "object": "invoice",
        "status": "paid",
        "amount_paid": 4900,
        "amount_due": 4900,
        "currency": "usd",
        "payment_intent": "pi_unanswered_first",
        "lines": {"data": [{"period": {"start": start, "end": start + MONTH}}]},
        "parent": {
            "subscription_details": {
                "subscription": "sub_unanswered",
                "metadata": {"subscription_id": str(sub.id)},
            }
        },
    }
    event = make_event("invoice.paid", first)
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).json()["status"] == "duplicate"

    session.expire_all()
    sub = session.get(Subscription, sub.id)
    assert sub is not None and sub.status in ("canceled", "expired")
    assert canceled == ["sub_unanswered"]  # billing stopped at the gateway
    assert sub.entitlement_id is None
    assert not session.scalars(
        select(Entitlement).where(Entitlement.account_id == shop.buyer.id)
    ).all()
    paid = session.scalars(select(Order).where(Order.subscription_id == sub.id)).all()
    refunded = [o for o in paid if o.paid_at is not None]
    assert len(refunded) == 1 and refunded[0].refunded_minor == refunded[0].total_minor == 4900
    assert refunded[0].status == "refunded"
