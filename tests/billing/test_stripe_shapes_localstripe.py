"""A renewal paid at localstripe and told in either API shape (hand-signed: localstripe has
no clock and sends no charge or dispute events): its payment reference, the store's refund
of it, a dashboard refund and a dispute. localstripe has no ``invoice_payments`` API, so the
gateway falls back to what its old shape says (the invoice's and the PaymentIntent's own
fields)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.stripe_env import LocalStripe
from tests.billing.test_stripe_follows_access import remote, signed, subscribed
from tests.billing.test_stripe_localstripe import gateway

pytestmark = pytest.mark.e2e

SHAPES = ["endive", "2017"]
MONTH = 30 * 86400


def renew_at_localstripe(billing: Billing, sub: Subscription, amount: int) -> tuple[str, str]:
    """A paid renewal invoice of ``sub`` made at localstripe: (invoice id, its PaymentIntent)."""
    v1 = gateway(billing).v1
    assert sub.gateway_ref
    customer = str(remote(billing, sub)["customer"])
    v1.invoice_items.create(
        {"customer": customer, "amount": amount, "currency": "usd", "subscription": sub.gateway_ref}
    )
    invoice = v1.invoices.create({"customer": customer, "subscription": sub.gateway_ref})
    paid = v1.invoices.pay(invoice.id)
    assert paid["status"] == "paid"
    return invoice.id, str(paid["payment_intent"])


def invoice_event(sub: Subscription, ref: str, payment: str, shape: str) -> dict[str, Any]:
    assert sub.current_period_end is not None
    start = int(sub.current_period_end.timestamp())
    data: dict[str, Any] = {
        "id": ref,
        "object": "invoice",
        "status": "paid",
        "amount_paid": 4900,
        "amount_due": 4900,
        "currency": "usd",
        "lines": {"data": [{"period": {"start": start, "end": start + MONTH}}]},
    }
    if shape == "2017":
        data.update(subscription=sub.gateway_ref, payment_intent=payment, paid=True)
    else:
        data["parent"] = {
            "type": "subscription_details",
            "subscription_details": {"subscription": sub.gateway_ref, "metadata": {}},
        }
    return data


def renewed(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    shape: str,
) -> tuple[Subscription, Order, str]:
    _, sub = subscribed(client, session, billing, shop, localstripe)
    ref, payment = renew_at_localstripe(billing, sub, 4900)
    signed(client, "invoice.paid", invoice_event(sub, ref, payment, shape))
    session.expire_all()
    order = session.query(Order).filter(Order.gateway_ref == ref).one()
    assert order.status == "paid"
    return sub, order, payment


@pytest.mark.parametrize("shape", SHAPES)
def test_a_renewal_refunded_by_the_store_then_from_the_dashboard(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    shape: str,
) -> None:
    sub, order, payment = renewed(client, session, stripe_billing, shop, localstripe, shape)
    assert order.payment_ref == payment
    orders.refund(session, stripe_billing, actor=shop.admin, order=order, amount_minor=1000)
    session.commit()
    assert order.status == "partially_refunded" and order.refunded_minor == 1000
    refunds = gateway(stripe_billing).v1.refunds.list({"payment_intent": payment})
    assert [r["amount"] for r in refunds.data] == [1000]
    # The rest from Stripe's dashboard: its charge.refunded names only the PaymentIntent in
    # the new shape.
    gateway(stripe_billing).v1.refunds.create({"payment_intent": payment})
    charge: dict[str, Any] = {
        "id": "ch_dashboard_renewal",
        "object": "charge",
        "amount": 4900,
        "amount_refunded": 4900,
        "refunded": True,
        "payment_intent": payment,
    }
    if shape == "2017":
        charge["invoice"] = order.gateway_ref
    signed(client, "charge.refunded", charge)
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert order.status == "refunded" and order.refunded_minor == 4900
    assert session.get(Entitlement, sub.entitlement_id).status == "revoked"  # type: ignore[union-attr]
    assert remote(stripe_billing, sub)["status"] == "canceled"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_dispute_of_a_renewal_recorded_without_its_payment(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    shape: str,
) -> None:
    """The renewal's order has no payment reference (recorded while Stripe could not be
    asked): the dispute's PaymentIntent leads to its invoice through the gateway."""
    sub, order, payment = renewed(client, session, stripe_billing, shop, localstripe, shape)
    order.payment_ref = None
    session.commit()
    dispute: dict[str, Any] = {"id": "dp_renewal", "object": "dispute", "payment_intent": payment}
    if shape == "2017":
        dispute["charge"] = {"id": "ch_renewal", "payment_intent": payment}
    else:
        dispute["charge"] = "ch_renewal"
    signed(client, "charge.dispute.created", {**dispute, "status": "needs_response"})
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert order.dispute_status == "open" and order.payment_ref == payment
    assert session.get(Entitlement, sub.entitlement_id).status == "suspended"  # type: ignore[union-attr]
    assert remote(stripe_billing, sub)["cancel_at_period_end"] is True
    signed(client, "charge.dispute.closed", {**dispute, "status": "lost"})
    assert remote(stripe_billing, sub)["status"] == "canceled"
    session.expire_all()
    assert session.get(Entitlement, sub.entitlement_id).status == "revoked"  # type: ignore[union-attr]
