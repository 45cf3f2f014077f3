"""3-D Secure on card replacement: a new card whose bank asks for confirmation waits (the old
card stays) until the customer confirms it; a failed confirmation drops it. Test gateway
(service, API, page) and Stripe through a real SetupIntent on localstripe."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders, subscriptions, webhooks
from store.billing.gateway import PaymentInput
from store.billing.models import GatewayCustomer, Subscription
from store.billing.runtime import Billing
from store.billing.stripe_gateway import StripeGateway
from store.billing.test_gateway import CARD_AUTHENTICATE, CARD_SUCCESS
from store.db import utcnow
from store.errors import Conflict, PaymentRequired
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event
from tests.billing.test_self_service import fail_renewal
from tests.factories import api_token, auth
from tests.web.helpers import HTML, csrf_of, login


def subscribe(
    session: Session, billing: Billing, shop: Shop, payment: PaymentInput
) -> Subscription:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    session.commit()
    orders.pay(session, billing, order=order, payment=payment)
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    if sub.status == "incomplete":  # Stripe: as the webhook would, from the gateway's object
        subscriptions.refresh_from_gateway(session, billing, sub, {}, at=utcnow())
        session.commit()
    assert sub.status == "active"
    return sub


def test_test_gateway_confirmation_step(session: Session, billing: Billing, shop: Shop) -> None:
    sub = subscribe(session, billing, shop, PaymentInput(card_number=CARD_SUCCESS))
    with pytest.raises(Conflict) as nothing:
        subscriptions.complete_card_setup(session, billing, sub=sub, approve=True)
    assert nothing.value.code == "nothing_to_confirm"
    subscriptions.replace_card(
        session, billing, sub=sub, payment=PaymentInput(card_number=CARD_AUTHENTICATE)
    )
    session.commit()
    assert sub.pending_setup_ref is not None
    # Not answered yet: still waiting.
    waiting = subscriptions.complete_card_setup(session, billing, sub=sub)
    assert waiting.status == "requires_action" and sub.pending_setup_ref is not None
    failed = subscriptions.complete_card_setup(session, billing, sub=sub, approve=False)
    assert failed.status == "failed" and failed.code == "setup_intent_authentication_failure"
    assert sub.pending_setup_ref is None
    subscriptions.replace_card(
        session, billing, sub=sub, payment=PaymentInput(card_number=CARD_AUTHENTICATE)
    )
    done = subscriptions.complete_card_setup(session, billing, sub=sub, approve=True)
    assert done.status == "succeeded" and sub.pending_setup_ref is None
    # A card needing confirmation cannot pay a past-due invoice in the same step.
    session.commit()
    fail_renewal(session, billing, sub, "in_test_renewal_3ds")
    with pytest.raises(PaymentRequired) as err:
        subscriptions.pay_now(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_AUTHENTICATE)
        )
    assert err.value.code == "authentication_required"


def test_api_and_page(client: TestClient, session: Session, billing: Billing, shop: Shop) -> None:
    sub = subscribe(session, billing, shop, PaymentInput(card_number=CARD_SUCCESS))
    api = {**auth(api_token(session, shop.buyer)), "accept": "application/json"}
    session.commit()
    base = f"/api/v1/billing/subscriptions/{sub.id}/card"
    r = client.post(base, json={"card_number": CARD_AUTHENTICATE}, headers=api)
    assert r.status_code == 200, r.text
    assert r.json()["next_action"] == "authenticate" and r.json()["card_confirmation_pending"]
    r = client.post(f"{base}/confirm", json={"approve": False}, headers=api)
    assert r.status_code == 402 and r.json()["error"] == "setup_intent_authentication_failure"
    r = client.post(f"{base}/confirm", json={}, headers=api)
    assert r.status_code == 409 and r.json()["error"] == "nothing_to_confirm"
    r = client.post(base, json={"card_number": CARD_AUTHENTICATE}, headers=api)
    r = client.post(f"{base}/confirm", json={"approve": True}, headers=api)
    assert r.status_code == 200 and not r.json()["card_confirmation_pending"]
    # The page: replace, see the confirmation step, approve.
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/my/purchases/subscriptions/{sub.id}")
    r = client.post(
        f"/my/purchases/subscriptions/{sub.id}/card",
        data={"csrf_token": csrf_of(page.text), "card_number": CARD_AUTHENTICATE},
        follow_redirects=True,
    )
    assert "Your bank asks you to confirm the new card" in r.text
    assert "Confirm your new card" in r.text and "Approve" in r.text
    r = client.post(
        f"/my/purchases/subscriptions/{sub.id}/card/confirm",
        data={"csrf_token": csrf_of(r.text), "decision": "approve"},
        follow_redirects=True,
    )
    assert "Your new card is confirmed" in r.text and "Confirm your new card" not in r.text


@pytest.mark.e2e
def test_stripe_setup_intent_with_3d_secure(
    client: TestClient, session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    gateway = stripe_billing.gateway
    assert isinstance(gateway, StripeGateway)
    v1: Any = gateway.v1
    sub = subscribe(session, stripe_billing, shop, PaymentInput(payment_method="pm_card_visa"))
    customer = session.scalar(
        select(GatewayCustomer.gateway_ref).where(GatewayCustomer.account_id == shop.buyer.id)
    )
    before = v1.customers.retrieve(customer)["invoice_settings"]["default_payment_method"]

    def three_d_secure_card() -> str:
        card = {"number": "4000002500003155", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
        return str(v1.payment_methods.create({"type": "card", "card": card}).id)

    # 1. Confirmed: the SetupIntent asks for authentication; the old card stays meanwhile.
    pm = three_d_secure_card()
    subscriptions.replace_card(
        session, stripe_billing, sub=sub, payment=PaymentInput(payment_method=pm)
    )
    session.commit()
    seti = v1.setup_intents.retrieve(sub.pending_setup_ref)
    assert seti["status"] == "requires_action" and seti["customer"] == customer
    assert seti["metadata"]["subscription_id"] == str(sub.id)
    assert v1.customers.retrieve(customer)["invoice_settings"]["default_payment_method"] == before
    not_yet = subscriptions.complete_card_setup(session, stripe_billing, sub=sub)
    assert not_yet.status == "requires_action" and not_yet.client_secret == seti["client_secret"]
    # The customer passes the bank's step (Stripe.js; localstripe: confirming it again).
    v1.setup_intents.confirm(seti.id, {})
    # Stripe's setup_intent.succeeded (localstripe sends none: hand-made) finishes it.
    webhooks.process_event(
        session, stripe_billing, make_event("setup_intent.succeeded", seti.to_dict())
    )
    session.commit()
    assert sub.pending_setup_ref is None
    default = v1.customers.retrieve(customer)["invoice_settings"]["default_payment_method"]
    assert default == pm
    # 2. Abandoned or failed at the bank: the old card stays and the new one is dropped.
    pm2 = three_d_secure_card()
    subscriptions.replace_card(
        session, stripe_billing, sub=sub, payment=PaymentInput(payment_method=pm2)
    )
    session.commit()
    v1.setup_intents.cancel(sub.pending_setup_ref)
    r = client.post(
        f"/api/v1/billing/subscriptions/{sub.id}/card/confirm",
        json={},
        headers={**auth(api_token(session, shop.buyer)), "accept": "application/json"},
    )
    assert r.status_code == 402, r.text
    session.expire_all()
    assert session.get(Subscription, sub.id).pending_setup_ref is None  # type: ignore[union-attr]
    assert v1.customers.retrieve(customer)["invoice_settings"]["default_payment_method"] == pm
