"""Billing follows access in Stripe mode: the real SDK against localstripe, with hand-signed
events for what localstripe never sends (charge.refunded, disputes)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.billing import orders
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.licensing.models import Entitlement
from tests.billing.conftest import STRIPE_WEBHOOK_SECRET, Shop
from tests.billing.helpers import make_event, post_event
from tests.billing.stripe_env import LocalStripe
from tests.billing.test_stripe_localstripe import checkout, gateway, relay
from tests.factories import api_token, auth, make_account

pytestmark = pytest.mark.e2e


def subscribed(
    client: TestClient, session: Session, billing: Billing, shop: Shop, localstripe: LocalStripe
) -> tuple[Order, Subscription]:
    order, outcome = checkout(session, billing, shop, shop.monthly, "pm_card_visa")
    assert outcome.status == "succeeded" and outcome.subscription_ref
    relay(
        client,
        localstripe.recorder.wait_for("customer.subscription.created", outcome.subscription_ref),
    )
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    sub = session.get(Subscription, order.subscription_id)
    assert order.status == "paid" and order.payment_ref and sub is not None
    assert sub.status == "active"
    return order, sub


def remote(billing: Billing, sub: Subscription) -> Any:
    assert sub.gateway_ref
    return gateway(billing).v1.subscriptions.retrieve(sub.gateway_ref)


def signed(client: TestClient, type_: str, obj: dict[str, Any]) -> None:
    r = post_event(client, make_event(type_, obj), secret=STRIPE_WEBHOOK_SECRET)
    assert r.status_code == 200, r.text


def test_dashboard_refund_cancels_at_stripe(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, sub = subscribed(client, session, stripe_billing, shop, localstripe)
    # Refunded in the dashboard: Stripe sends charge.refunded (localstripe does not).
    gateway(stripe_billing).v1.refunds.create({"payment_intent": order.payment_ref})
    charge = {
        "id": "ch_dashboard",
        "object": "charge",
        "amount": order.total_minor,
        "amount_refunded": order.total_minor,
        "refunded": True,
        "payment_intent": order.payment_ref,
    }
    signed(client, "charge.refunded", charge)
    assert remote(stripe_billing, sub)["status"] == "canceled"
    relay(client, localstripe.recorder.wait_for("customer.subscription.deleted", sub.gateway_ref))
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "canceled" and sub.end_reason == "refunded"
    assert session.get(Entitlement, sub.entitlement_id).status == "revoked"  # type: ignore[union-attr]


def test_admin_refund_cancels_at_stripe(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, sub = subscribed(client, session, stripe_billing, shop, localstripe)
    orders.refund(session, stripe_billing, actor=shop.admin, order=order)
    session.commit()
    assert order.status == "refunded"
    assert remote(stripe_billing, sub)["status"] == "canceled"
    session.expire_all()
    assert session.get(Subscription, sub.id).status == "canceled"  # type: ignore[union-attr]


def test_unpublish_and_suspend_at_stripe(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    _, sub = subscribed(client, session, stripe_billing, shop, localstripe)
    publisher = auth(api_token(session, shop.publisher))
    admin = auth(api_token(session, shop.admin))
    session.commit()
    # Through the API: Stripe is told after the edit's response.
    url = f"/api/v1/products/{shop.product.repository}/status"
    r = client.post(url, json={"status": "draft"}, headers=publisher)
    assert r.status_code == 200, r.text
    assert remote(stripe_billing, sub)["cancel_at_period_end"] is True
    assert remote(stripe_billing, sub)["status"] == "active"
    session.refresh(sub)
    assert sub.cancel_at_period_end and sub.end_reason == "unpublished"
    r = client.post(url, json={"status": "suspended", "reason": "Abuse"}, headers=admin)
    assert r.status_code == 200, r.text
    assert remote(stripe_billing, sub)["status"] == "canceled"
    session.refresh(sub)
    assert sub.status == "canceled" and sub.end_reason == "suspended"


def test_lost_dispute_cancels_at_stripe_won_resumes(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, sub = subscribed(client, session, stripe_billing, shop, localstripe)
    dispute = {"id": "dp_1", "object": "dispute", "payment_intent": order.payment_ref}
    signed(client, "charge.dispute.created", {**dispute, "status": "needs_response"})
    assert remote(stripe_billing, sub)["cancel_at_period_end"] is True
    signed(client, "charge.dispute.closed", {**dispute, "status": "won"})
    assert remote(stripe_billing, sub)["cancel_at_period_end"] is False
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert session.get(Entitlement, sub.entitlement_id).status == "active"  # type: ignore[union-attr]

    second, other = subscribed_again(client, session, stripe_billing, shop, localstripe)
    dispute2 = {"id": "dp_2", "object": "dispute", "payment_intent": second.payment_ref}
    signed(client, "charge.dispute.created", {**dispute2, "status": "needs_response"})
    signed(client, "charge.dispute.closed", {**dispute2, "status": "lost"})
    assert remote(stripe_billing, other)["status"] == "canceled"
    session.expire_all()
    other = session.get(Subscription, other.id)  # type: ignore[assignment]
    assert other.status == "canceled" and other.end_reason == "dispute_lost"
    assert session.get(Entitlement, other.entitlement_id).status == "revoked"  # type: ignore[union-attr]


def subscribed_again(
    client: TestClient, session: Session, billing: Billing, shop: Shop, localstripe: LocalStripe
) -> tuple[Order, Subscription]:
    """Another buyer's subscription to the same tier."""
    shop.buyer = make_account(session)
    session.commit()
    return subscribed(client, session, billing, shop, localstripe)
