"""Renewals, refunds and disputes told in both of Stripe's API shapes (hand-signed events,
the test gateway answering what Stripe's ``invoice_payments`` API would).

The 2017 shape (localstripe, old API versions) names an invoice's PaymentIntent on the
invoice and a charge's invoice on the charge; the 2026-10-28.endive shape (the SDK's pinned
version, so what Stripe sends) names neither: the payment is the invoice's InvoicePayment.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.gateway import GatewayError, PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.shapes import item_subscription, paid_by, payment_in_invoice
from store.billing.test_gateway import CARD_SUCCESS
from store.errors import Conflict
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event

SHAPES = ["endive", "2017"]
MONTH = 30 * 86400


def running(session: Session, billing: Billing, shop: Shop) -> Subscription:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.current_period_end is not None
    return sub


def renewal(
    sub: Subscription,
    shape: str,
    *,
    ref: str | None = None,
    payment: str | None = None,
    payments_in_payload: bool = False,
) -> dict[str, Any]:
    """A paid renewal invoice of ``sub`` as Stripe sends it in ``shape``. Its id is the test
    gateway's kind (``in_test_…``, paid by ``pi_test_…``) unless given."""
    hexid = uuid.uuid4().hex
    ref = ref or f"in_test_{hexid}"
    payment = payment or f"pi_test_{hexid}"
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
        data["total_taxes"] = []
        if payments_in_payload:
            data["payments"] = {
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "invoice": ref,
                        "is_default": True,
                        "status": "paid",
                        "payment": {"type": "payment_intent", "payment_intent": payment},
                    }
                ],
            }
    return data


def charge(invoice: dict[str, Any], shape: str, payment: str, refunded: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "ch_" + uuid.uuid4().hex[:12],
        "object": "charge",
        "amount": 4900,
        "amount_refunded": refunded,
        "refunded": refunded >= 4900,
        "payment_intent": payment,
    }
    if shape == "2017":
        data["invoice"] = invoice["id"]
    return data


def dispute(invoice: dict[str, Any], shape: str, payment: str, status: str) -> dict[str, Any]:
    if shape == "2017":
        of: Any = {"id": "ch_disputed", "payment_intent": payment, "invoice": invoice["id"]}
        return {"id": "dp_1", "object": "dispute", "charge": of, "status": status}
    return {
        "id": "dp_1",
        "object": "dispute",
        "charge": "ch_disputed",
        "payment_intent": payment,
        "status": status,
    }


def told(client: TestClient, type_: str, obj: dict[str, Any], **kw: Any) -> Any:
    r = post_event(client, make_event(type_, obj, **kw))
    assert r.status_code == 200, r.text
    return r


def order_of(session: Session, invoice: dict[str, Any]) -> Order:
    session.expire_all()
    return session.scalars(select(Order).where(Order.gateway_ref == invoice["id"])).one()


def gateway_down(billing: Billing, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(ref: str) -> str | None:
        raise GatewayError("Stripe could not be reached")

    monkeypatch.setattr(billing.gateway, "invoice_payment_ref", down)
    monkeypatch.setattr(billing.gateway, "payment_invoice_ref", down)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_paid_renewal_has_its_payment_reference(
    client: TestClient, session: Session, billing: Billing, shop: Shop, shape: str
) -> None:
    """Old shape: from the invoice; new shape: the gateway says which payment paid it."""
    sub = running(session, billing, shop)
    invoice = renewal(sub, shape)
    told(client, "invoice.paid", invoice)
    order = order_of(session, invoice)
    assert order.status == "paid" and order.payment_ref == "pi" + invoice["id"][2:]


def test_a_renewal_with_its_payments_in_the_payload_needs_no_question(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """An invoice fetched with its InvoicePayments (or a payload that has them): the paid
    one is the reference (this invoice is not the test gateway's: it could not say)."""
    sub = running(session, billing, shop)
    invoice = renewal(
        sub, "endive", ref="in_endive_1", payment="pi_endive_1", payments_in_payload=True
    )
    invoice["payments"]["data"].insert(
        0,
        {
            "status": "canceled",
            "is_default": False,
            "payment": {"type": "payment_intent", "payment_intent": "pi_declined_first"},
        },
    )
    told(client, "invoice.paid", invoice)
    assert order_of(session, invoice).payment_ref == "pi_endive_1"


@pytest.mark.parametrize("shape", SHAPES)
def test_the_store_refunds_a_renewal_told_without_its_payment(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    shape: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paid while the gateway could not say which payment paid it: access is given at once
    (the event is not refused) and the reference is asked for when the refund needs it."""
    sub = running(session, billing, shop)
    invoice = renewal(sub, shape)
    with monkeypatch.context() as m:
        gateway_down(billing, m)
        told(client, "invoice.paid", invoice)
    order = order_of(session, invoice)
    expected = None if shape == "endive" else "pi" + invoice["id"][2:]
    assert order.status == "paid" and order.payment_ref == expected
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at == order.period_end
    refunded = orders.refund(session, billing, actor=shop.admin, order=order)
    session.commit()
    assert refunded.payment_ref == "pi" + invoice["id"][2:]
    assert refunded.status == "refunded" and refunded.refunded_minor == 4900
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "canceled" and sub.end_reason == "refunded"


def test_a_refund_the_gateway_cannot_place_is_refused_not_lost(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = running(session, billing, shop)
    invoice = renewal(sub, "endive")
    gateway_down(billing, monkeypatch)
    told(client, "invoice.paid", invoice)
    order = order_of(session, invoice)
    with pytest.raises(Conflict) as refused:
        orders.refund(session, billing, actor=shop.admin, order=order)
    assert refused.value.code == "refund_failed"
    session.rollback()
    assert order_of(session, invoice).status == "paid"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("known", [True, False], ids=["reference_known", "reference_unknown"])
def test_a_dashboard_refund_of_a_renewal_is_matched(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    shape: str,
    known: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partial refund, then the rest, from Stripe's dashboard: ``charge.refunded`` names
    only the PaymentIntent in the new shape. Found by it, or (the renewal was told without
    its payment) by the invoice the gateway says it paid."""
    sub = running(session, billing, shop)
    invoice = renewal(sub, shape)
    payment = "pi" + invoice["id"][2:]
    with monkeypatch.context() as m:
        if not known:
            gateway_down(billing, m)
        told(client, "invoice.paid", invoice)
    if not known and shape == "endive":
        assert order_of(session, invoice).payment_ref is None
    told(client, "charge.refunded", charge(invoice, shape, payment, 1500))
    order = order_of(session, invoice)
    assert order.status == "partially_refunded" and order.refunded_minor == 1500
    assert order.payment_ref == payment
    assert session.get(Entitlement, sub.entitlement_id).status == "active"  # type: ignore[union-attr]
    told(client, "charge.refunded", charge(invoice, shape, payment, 4900))
    order = order_of(session, invoice)
    assert order.status == "refunded" and order.refunded_minor == 4900
    assert session.get(Entitlement, sub.entitlement_id).status == "revoked"  # type: ignore[union-attr]
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.end_requested == "now" and sub.end_reason == "refunded"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_renewal_refunded_before_it_is_told_paid_waits_for_it(
    client: TestClient, session: Session, billing: Billing, shop: Shop, shape: str
) -> None:
    """New shape too: the charge's invoice comes from the gateway; unknown to the store yet,
    the refund is answered 503 (Stripe redelivers it) and applied once the invoice is."""
    sub = running(session, billing, shop)
    invoice = renewal(sub, shape)
    payment = "pi" + invoice["id"][2:]
    refund = make_event("charge.refunded", charge(invoice, shape, payment, 4900))
    early = post_event(client, refund)
    assert early.status_code == 503 and early.json()["error"] == "retry_later"
    told(client, "invoice.paid", invoice)
    assert post_event(client, refund).json()["status"] == "processed"
    order = order_of(session, invoice)
    assert order.status == "refunded" and order.payment_ref == payment
    # A charge the gateway cannot place now: told again later, not acknowledged and lost;
    # of an invoice that stays unknown, acknowledged once the window is over.
    other = renewal(sub, shape)
    later = charge(other, shape, "pi" + other["id"][2:], 4900)
    with pytest.MonkeyPatch.context() as m:
        gateway_down(billing, m)
        assert post_event(client, make_event("charge.refunded", later)).status_code == 503
    old = make_event("charge.refunded", later, created=int(time.time()) - 3600)
    assert post_event(client, old).status_code == 200


@pytest.mark.parametrize("shape", SHAPES)
def test_a_dispute_of_a_renewal_is_matched(
    client: TestClient, session: Session, billing: Billing, shop: Shop, shape: str
) -> None:
    """Opened: access paused and no renewal; lost: revoked and canceled at once."""
    sub = running(session, billing, shop)
    invoice = renewal(sub, shape)
    payment = "pi" + invoice["id"][2:]
    told(client, "invoice.paid", invoice)
    told(client, "charge.dispute.created", dispute(invoice, shape, payment, "needs_response"))
    order = order_of(session, invoice)
    assert order.dispute_status == "open"
    assert session.get(Entitlement, sub.entitlement_id).status == "suspended"  # type: ignore[union-attr]
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.end_requested == "period_end" and sub.end_reason == "disputed"
    told(client, "charge.dispute.closed", dispute(invoice, shape, payment, "lost"))
    session.expire_all()
    assert session.get(Entitlement, sub.entitlement_id).status == "revoked"  # type: ignore[union-attr]
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "canceled" and sub.end_reason == "dispute_lost"


def test_the_subscription_of_an_invoice_item_in_either_shape() -> None:
    """A plan change deletes the proration and coupon lines waiting for the subscription's
    next invoice: found by their subscription, which moved in the new shape."""
    old = {"id": "ii_1", "subscription": "sub_1"}
    new = {"id": "ii_2", "parent": {"subscription_details": {"subscription": "sub_1"}}}
    assert item_subscription(old) == item_subscription(new) == "sub_1"
    assert item_subscription({"id": "ii_3", "parent": None}) is None


def test_the_payment_among_an_invoices_payments() -> None:
    def payment(ref: str, status: str, default: bool = False) -> dict[str, Any]:
        intent = {"type": "payment_intent", "payment_intent": ref}
        return {"status": status, "is_default": default, "payment": intent}

    assert paid_by([payment("pi_a", "canceled"), payment("pi_b", "paid")]) == "pi_b"
    assert paid_by([payment("pi_a", "canceled", True), payment("pi_b", "open")]) == "pi_b"
    assert paid_by([payment("pi_a", "canceled"), payment("pi_b", "canceled", True)]) == "pi_b"
    assert paid_by([{"status": "paid", "payment": {"type": "charge", "charge": "ch_1"}}]) is None
    assert payment_in_invoice({"payment_intent": {"id": "pi_x"}}) == "pi_x"
