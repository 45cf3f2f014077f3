"""Customer self-service: a subscription's billing page, replacing the card, and paying a
past-due invoice now (test gateway and Stripe via localstripe); a retry and a late or
repeated invoice event charge and count once."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing import orders, subscriptions, webhooks
from store.billing.gateway import PaymentInput
from store.billing.models import GatewayCustomer, Order, Subscription
from store.billing.runtime import Billing
from store.billing.stripe_gateway import StripeGateway
from store.billing.test_gateway import CARD_DECLINE, CARD_SUCCESS
from store.db import utcnow
from store.errors import Conflict, PaymentRequired
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event
from tests.factories import api_token, auth
from tests.web.helpers import HTML, csrf_of, login


def subscribe(session: Session, billing: Billing, shop: Shop, card: Any) -> Subscription:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    session.commit()
    orders.pay(session, billing, order=order, payment=card)
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    session.refresh(sub)
    return sub


def fail_renewal(session: Session, billing: Billing, sub: Subscription, invoice_id: str) -> None:
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": 4900,
        "tax": 0,
        "currency": "usd",
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
        "last_finalization_error": {"message": "Your card has insufficient funds."},
    }
    webhooks.process_event(session, billing, make_event("invoice.payment_failed", invoice))
    session.commit()
    session.refresh(sub)
    assert sub.status == "past_due"


def _orders_of(session: Session, sub: Subscription) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(Order).where(Order.subscription_id == sub.id)
        )
        or 0
    )


def test_pay_now_on_the_test_gateway(session: Session, billing: Billing, shop: Shop) -> None:
    sub = subscribe(session, billing, shop, PaymentInput(card_number=CARD_SUCCESS))
    with pytest.raises(Conflict) as nothing:
        subscriptions.pay_now(session, billing, sub=sub)
    assert nothing.value.code == "nothing_due"
    fail_renewal(session, billing, sub, "in_test_renewal_1")
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.grace_until is not None
    with pytest.raises(PaymentRequired) as declined:
        subscriptions.pay_now(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_DECLINE)
        )
    assert declined.value.code == "card_declined"
    session.refresh(sub)
    assert sub.status == "past_due"
    order = subscriptions.pay_now(
        session, billing, sub=sub, payment=PaymentInput(card_number=CARD_SUCCESS)
    )
    session.commit()
    assert order.status == "paid" and order.gateway_ref == "in_test_renewal_1"
    session.refresh(sub)
    session.refresh(ent)
    assert sub.status == "active" and sub.paid_charges == 2 and ent.grace_until is None
    count = _orders_of(session, sub)
    # The gateway's own event for that invoice, late and twice: nothing more happens.
    late = {
        "id": "in_test_renewal_1",
        "object": "invoice",
        "amount_paid": 4900,
        "tax": 0,
        "currency": "usd",
        "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
    }
    for _ in range(2):
        webhooks.process_event(session, billing, make_event("invoice.paid", late))
    session.commit()
    session.refresh(sub)
    assert _orders_of(session, sub) == count and sub.paid_charges == 2
    with pytest.raises(Conflict):
        subscriptions.pay_now(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_SUCCESS)
        )


def test_replace_card_rules(session: Session, billing: Billing, shop: Shop) -> None:
    sub = subscribe(session, billing, shop, PaymentInput(card_number=CARD_SUCCESS))
    with pytest.raises(PaymentRequired) as declined:
        subscriptions.replace_card(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_DECLINE)
        )
    assert declined.value.code == "card_declined"
    subscriptions.replace_card(
        session, billing, sub=sub, payment=PaymentInput(card_number=CARD_SUCCESS)
    )
    subscriptions.cancel_now(session, billing, subscription=sub)
    session.refresh(sub)
    with pytest.raises(Conflict) as ended:
        subscriptions.replace_card(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_SUCCESS)
        )
    assert ended.value.code == "subscription_ended"


def test_billing_page_and_api(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sub = subscribe(session, billing, shop, PaymentInput(card_number=CARD_SUCCESS))
    fail_renewal(session, billing, sub, "in_test_renewal_page")
    token = auth(api_token(session, shop.buyer))
    session.commit()
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    assert f"/my/purchases/subscriptions/{sub.id}" in client.get("/my/purchases").text
    page = client.get(f"/my/purchases/subscriptions/{sub.id}")
    assert page.status_code == 200
    assert "The payment of $49.00 failed: Your card has insufficient funds." in page.text
    assert "Pay $49.00 with this card" in page.text
    form = {"csrf_token": csrf_of(page.text), "pay": "1"}
    r = client.post(
        f"/my/purchases/subscriptions/{sub.id}/card",
        data={**form, "card_number": CARD_DECLINE},
        follow_redirects=True,
    )
    assert "Your card was declined." in r.text
    r = client.post(
        f"/my/purchases/subscriptions/{sub.id}/card",
        data={**form, "card_number": CARD_SUCCESS},
        follow_redirects=True,
    )
    assert "Paid $49.00: your subscription is active again." in r.text
    assert "Next charge" in r.text and "Replace card" in r.text
    api = {**token, "accept": "application/json"}
    r = client.post(
        f"/api/v1/billing/subscriptions/{sub.id}/pay",
        json={"card_number": CARD_SUCCESS},
        headers=api,
    )
    assert r.status_code == 409 and r.json()["error"] == "nothing_due"
    r = client.post(
        f"/api/v1/billing/subscriptions/{sub.id}/card",
        json={"card_number": CARD_DECLINE},
        headers=api,
    )
    assert r.status_code == 402 and r.json()["error"] == "card_declined"
    r = client.post(
        f"/api/v1/billing/subscriptions/{sub.id}/card",
        json={"card_number": CARD_SUCCESS},
        headers=api,
    )
    assert r.status_code == 200 and r.json()["status"] == "active"


@pytest.mark.e2e
def test_stripe_replace_card_and_pay_an_open_invoice(
    session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    gateway = stripe_billing.gateway
    assert isinstance(gateway, StripeGateway)
    v1 = gateway.v1
    sub = subscribe(session, stripe_billing, shop, PaymentInput(payment_method="pm_card_visa"))
    assert sub.gateway_ref is not None
    # As the webhook would (not relayed here): the gateway's subscription, fetched.
    subscriptions.refresh_from_gateway(session, stripe_billing, sub, {}, at=utcnow())
    session.commit()
    subscriptions.replace_card(
        session, stripe_billing, sub=sub, payment=PaymentInput(payment_method="pm_card_visa")
    )
    customer = session.scalar(
        select(GatewayCustomer.gateway_ref).where(GatewayCustomer.account_id == shop.buyer.id)
    )
    default = v1.customers.retrieve(customer)["invoice_settings"]["default_payment_method"]
    assert str(default).startswith("pm_")
    # A renewal invoice that failed (Stripe's invoice.payment_failed names it).
    draft = v1.invoices.create({"customer": customer, "subscription": sub.gateway_ref})
    failed = {**draft.to_dict(), "amount_due": 4900, "tax": 0}
    failed["last_finalization_error"] = {"message": "Your card was declined."}
    subscriptions.invoice_failed(session, stripe_billing, sub, failed, at=utcnow())
    session.commit()
    session.refresh(sub)
    assert sub.status == "past_due"
    order = subscriptions.pay_now(session, stripe_billing, sub=sub)
    session.commit()
    assert order.status == "paid" and order.gateway_ref == draft.id
    assert v1.invoices.retrieve(draft.id)["status"] == "paid"
    session.refresh(sub)
    assert sub.status == "active"
