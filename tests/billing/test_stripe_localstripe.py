"""The Stripe gateway through the real SDK over HTTP against localstripe, with localstripe's
own signed webhook deliveries relayed to the store's endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing import orders, prices, reconcile, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import GatewayCustomer, GatewayTaxRate, Order, Subscription
from store.billing.pricing import Buyer
from store.billing.runtime import Billing, build_billing
from store.billing.stripe_gateway import StripeGateway, plan_id
from store.config import Settings
from store.errors import Forbidden
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import billing_settings
from tests.billing.stripe_env import Delivery, LocalStripe
from tests.factories import make_account

pytestmark = pytest.mark.e2e


def relay(client: TestClient, delivery: Delivery) -> dict[str, Any]:
    r = client.post(
        "/billing/stripe/webhook",
        content=delivery.body,
        headers={"Stripe-Signature": delivery.signature, "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def gateway(billing: Billing) -> StripeGateway:
    assert isinstance(billing.gateway, StripeGateway)
    return billing.gateway


def checkout(
    session: Session, billing: Billing, shop: Shop, tier: Any, pm: str
) -> tuple[Order, Any]:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=tier)
    session.commit()
    outcome = orders.pay(session, billing, order=order, payment=PaymentInput(payment_method=pm))
    session.commit()
    return order, outcome


def test_one_time_purchase(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, outcome = checkout(session, stripe_billing, shop, shop.one_time, "pm_card_visa")
    assert outcome.status == "succeeded" and outcome.payment_ref
    # The answer alone does not fulfil: the order waits for the webhook.
    assert order.status == "pending" and order.entitlement_id is None
    assert gateway(stripe_billing).payment_status(order) == "succeeded"
    delivery = localstripe.recorder.wait_for("payment_intent.succeeded", outcome.payment_ref)
    assert relay(client, delivery)["status"] == "processed"
    assert relay(client, delivery)["status"] == "duplicate"
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert order.status == "paid" and order.payment_ref == outcome.payment_ref
    ent = session.get(Entitlement, order.entitlement_id)
    assert ent is not None and ent.status == "active"
    pi = gateway(stripe_billing).v1.payment_intents.retrieve(outcome.payment_ref)
    assert pi["amount"] == 9900 and pi["metadata"]["order_id"] == str(order.id)
    assert session.scalar(
        select(GatewayCustomer.gateway_ref).where(GatewayCustomer.account_id == shop.buyer.id)
    )


def test_real_money_needs_a_confirmed_address(
    session: Session, settings: Settings, stripe_billing: Billing, shop: Shop
) -> None:
    """On Stripe an unconfirmed buyer is refused before anything is charged; the test
    gateway (no money) lets them buy."""
    fresh = make_account(session, email_verified=False)
    with pytest.raises(Forbidden) as refused:
        orders.start_checkout(session, stripe_billing, account=fresh, tier=shop.one_time)
    assert refused.value.code == "email_unverified"
    assert not session.scalars(select(Order).where(Order.account_id == fresh.id)).all()
    test_gateway = build_billing(billing_settings(), settings)
    order = orders.start_checkout(session, test_gateway, account=fresh, tier=shop.one_time)
    assert order.status == "pending" and order.gateway == "test"


def test_declined_card(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, outcome = checkout(
        session, stripe_billing, shop, shop.one_time, "pm_card_chargeCustomerFail"
    )
    assert outcome.status == "failed" and "declined" in outcome.message
    session.refresh(order)
    assert order.status == "failed" and order.entitlement_id is None
    delivery = localstripe.recorder.wait_for("payment_intent.payment_failed", str(order.id))
    assert relay(client, delivery)["status"] == "processed"
    session.expire_all()
    assert session.get(Order, order.id).status == "failed"  # type: ignore[union-attr]


@pytest.mark.parametrize("success", [True, False])
def test_authentication_required_card(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    success: bool,
) -> None:
    v1 = gateway(stripe_billing).v1
    pm = v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    order, outcome = checkout(session, stripe_billing, shop, shop.one_time, pm.id)
    assert outcome.status == "requires_action" and outcome.client_secret
    session.refresh(order)
    assert order.status == "requires_action"
    localstripe.authenticate(outcome.payment_ref, outcome.client_secret, success=success)
    if success:
        relay(
            client, localstripe.recorder.wait_for("payment_intent.succeeded", outcome.payment_ref)
        )
    else:
        assert gateway(stripe_billing).payment_status(order) == "requires_payment_method"
        # localstripe sends no failure event for a failed authentication: a hand-made one
        # would say the same; the order stays requires_action until one arrives.
    session.expire_all()
    assert session.get(Order, order.id).status == ("paid" if success else "requires_action")  # type: ignore[union-attr]


def test_subscription_create_cancel_resume(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, outcome = checkout(session, stripe_billing, shop, shop.monthly, "pm_card_visa")
    assert outcome.status == "succeeded" and outcome.subscription_ref and outcome.invoice_ref
    sub_ref = outcome.subscription_ref
    relay(client, localstripe.recorder.wait_for("customer.subscription.created", sub_ref))
    relay(client, localstripe.recorder.wait_for("invoice.payment_succeeded", sub_ref))
    session.expire_all()
    sub = session.scalars(select(Subscription).where(Subscription.gateway_ref == sub_ref)).one()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert sub.status == "active" and sub.current_period_end is not None
    assert order.status == "paid" and order.gateway_ref == outcome.invoice_ref
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.status == "active" and ent.ends_at == sub.current_period_end

    subscriptions.set_cancel_at_period_end(session, stripe_billing, sub=sub, cancel=True)
    session.commit()
    remote = gateway(stripe_billing).v1.subscriptions.retrieve(sub_ref)
    assert remote["cancel_at_period_end"] is True and sub.cancel_at_period_end is True
    subscriptions.set_cancel_at_period_end(session, stripe_billing, sub=sub, cancel=False)
    session.commit()
    assert (
        gateway(stripe_billing).v1.subscriptions.retrieve(sub_ref)["cancel_at_period_end"] is False
    )
    assert sub.cancel_at_period_end is False

    subscriptions.cancel_now(session, stripe_billing, subscription=sub)
    session.commit()
    relay(client, localstripe.recorder.wait_for("customer.subscription.deleted", sub_ref))
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "canceled"
    # Access runs to the end of the paid period.
    assert session.get(Entitlement, sub.entitlement_id).status == "active"  # type: ignore[union-attr]


def test_declined_subscription(session: Session, stripe_billing: Billing, shop: Shop) -> None:
    order, outcome = checkout(
        session, stripe_billing, shop, shop.monthly, "pm_card_chargeCustomerFail"
    )
    assert outcome.status == "failed"
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    assert (
        order.status == "failed"
        and session.get(Subscription, order.subscription_id).status == "canceled"
    )  # type: ignore[union-attr]


def test_refund(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    order, outcome = checkout(session, stripe_billing, shop, shop.one_time, "pm_card_visa")
    relay(client, localstripe.recorder.wait_for("payment_intent.succeeded", outcome.payment_ref))
    session.expire_all()
    order = session.get(Order, order.id)  # type: ignore[assignment]
    orders.refund(session, stripe_billing, actor=shop.admin, order=order, amount_minor=900)
    session.commit()
    assert order.status == "partially_refunded" and order.refunded_minor == 900
    orders.refund(session, stripe_billing, actor=shop.admin, order=order)
    session.commit()
    assert order.status == "refunded" and order.refunded_minor == 9900
    assert session.get(Entitlement, order.entitlement_id).status == "revoked"  # type: ignore[union-attr]
    refunds = gateway(stripe_billing).v1.refunds.list({"payment_intent": outcome.payment_ref})
    assert sorted(r["amount"] for r in refunds.data) == [900, 9000]


def test_sync_creates_products_and_plans_once(
    session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    synced = prices.sync_all(session, stripe_billing)
    assert {p.tier_id for p in synced} >= {shop.one_time.id, shop.monthly.id, shop.trial.id}
    v1 = gateway(stripe_billing).v1
    monthly_price = next(p for p in synced if p.tier_id == shop.monthly.id)
    plan = v1.plans.retrieve(plan_id(shop.monthly, monthly_price))
    assert (plan["amount"], plan["interval"], plan["currency"]) == (4900, "month", "usd")
    assert shop.monthly.gateway_price_ref == plan.id
    again = prices.sync_all(session, stripe_billing)
    assert [p.id for p in again] == [p.id for p in synced]
    # A new amount is a new plan; the old one is untouched.
    shop.monthly.amount_minor = 5900
    new = prices.ensure_price(session, stripe_billing, shop.monthly)
    assert new.gateway_ref != plan.id and v1.plans.retrieve(plan.id)["amount"] == 4900
    assert v1.plans.retrieve(new.gateway_ref)["amount"] == 5900


def test_stripe_checkout_page_loads_stripe_js(
    client: TestClient, session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    from tests.web.helpers import HTML, login

    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/checkout/{shop.one_time.id}")
    assert page.status_code == 200 and "TEST MODE" not in page.text
    assert '<script src="https://js.stripe.com/v3/"></script>' in page.text
    assert 'data-publishable-key="pk_test_store_billing"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self' https://js.stripe.com" in csp
    # The form posts a PaymentMethod id from Stripe.js; here the test card's.
    from tests.web.helpers import csrf_of

    # No PaymentMethod (Stripe.js did not run): said where Stripe.js shows card errors.
    missing = client.post(
        f"/checkout/{shop.one_time.id}",
        data={"payment_method": "", "csrf_token": csrf_of(page.text)},
    )
    assert missing.status_code == 422
    assert (
        '<p id="card-errors" class="field-error" role="alert">Enter your card.</p>' in missing.text
    )
    r = client.post(
        f"/checkout/{shop.one_time.id}",
        data={"payment_method": "pm_card_visa", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    status = client.get(r.headers["location"])
    # Paid at Stripe, webhook not here yet: the page asked Stripe and fulfilled the order.
    assert status.status_code == 200 and "refresh" not in status.headers
    session.expire_all()
    order = session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).one()
    assert order.status == "paid" and order.entitlement_id is not None


def test_new_and_repriced_tiers_get_their_stripe_plan_at_once(
    client: TestClient, session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    from store.catalog import service as catalog
    from tests.factories import api_token, auth

    token = api_token(session, shop.publisher)
    repository = shop.product.repository
    created = client.post(
        f"/api/v1/products/{repository}/tiers",
        json={"slug": "crew", "billing": "month", "amount_minor": 2900, "currency": "usd"},
        headers=auth(token),
    )
    assert created.status_code == 201, created.text
    session.expire_all()
    tier = catalog.get_tier_by_slug(session, shop.product, "crew")
    v1 = gateway(stripe_billing).v1
    assert tier.gateway_price_ref == plan_id(tier, prices.price_history(session, tier)[-1])
    assert v1.plans.retrieve(tier.gateway_price_ref)["amount"] == 2900
    first_plan = tier.gateway_price_ref
    repriced = client.patch(
        f"/api/v1/products/{repository}/tiers/crew",
        json={"amount_minor": 3900},
        headers=auth(token),
    )
    assert repriced.status_code == 200, repriced.text
    session.expire_all()
    assert tier.gateway_price_ref not in (None, first_plan)
    assert v1.plans.retrieve(tier.gateway_price_ref)["amount"] == 3900
    assert v1.plans.retrieve(first_plan)["amount"] == 2900  # history is never mutated


def test_declined_api_checkout_is_402(
    client: TestClient, session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    from tests.factories import api_token, auth

    buyer = auth(api_token(session, shop.buyer))
    session.commit()
    for tier in (shop.one_time, shop.monthly):
        r = client.post(
            "/api/v1/billing/checkout",
            json={"tier_id": str(tier.id), "payment_method": "pm_card_chargeCustomerFail"},
            headers=buyer,
        )
        assert r.status_code == 402, r.text
        assert r.json()["error"] == "card_declined" and "declined" in r.json()["detail"]
        assert r.json()["order"]["status"] == "failed"


def test_tax_shown_is_tax_charged(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    """The quote's tax is on the PaymentIntent amount and on the subscription's invoices,
    and the order records what Stripe charged."""
    stripe_billing.settings.tax_rates = "DE=19"
    buyer = Buyer(country="DE")
    shown = stripe_billing.quote(shop.trial, buyer, quantity=1)
    assert shown.total_minor == 58310  # 490.00 + 19 %
    v1 = gateway(stripe_billing).v1
    order = orders.start_checkout(
        session, stripe_billing, account=shop.buyer, tier=shop.monthly, buyer=buyer
    )
    session.commit()
    outcome = orders.pay(
        session, stripe_billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    invoice = v1.invoices.retrieve(outcome.invoice_ref)
    assert (invoice["total"], invoice["tax"]) == (5831, 931) == (order.total_minor, order.tax_minor)
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    session.expire_all()
    paid = session.get(Order, order.id)
    assert paid is not None and paid.status == "paid"
    assert (paid.amount_minor, paid.tax_minor, paid.tax_rate) == (4900, 931, "19")
    # A one-time purchase: the PaymentIntent's amount includes the tax.
    other = make_account(session)
    one = orders.start_checkout(
        session, stripe_billing, account=other, tier=shop.one_time, buyer=buyer
    )
    session.commit()
    done = orders.pay(
        session, stripe_billing, order=one, payment=PaymentInput(payment_method="pm_card_visa")
    )
    assert v1.payment_intents.retrieve(done.payment_ref)["amount"] == 11781 == one.total_minor
    # The tax rate is made once at Stripe and reused.
    again = orders.start_checkout(
        session, stripe_billing, account=make_account(session), tier=shop.monthly, buyer=buyer
    )
    session.commit()
    orders.pay(
        session, stripe_billing, order=again, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    assert session.scalar(select(func.count()).select_from(GatewayTaxRate)) == 1


def test_lost_webhooks_reconciled_by_the_command(
    session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    """The webhook never arrives: store billing reconcile fulfils through the same path."""
    once, paid_once = checkout(session, stripe_billing, shop, shop.one_time, "pm_card_visa")
    subscriber = make_account(session)
    sub_order = orders.start_checkout(
        session, stripe_billing, account=subscriber, tier=shop.monthly
    )
    session.commit()
    orders.pay(
        session,
        stripe_billing,
        order=sub_order,
        payment=PaymentInput(payment_method="pm_card_visa"),
    )
    session.commit()
    assert paid_once.status == "succeeded" and once.status == "pending"
    report = reconcile.reconcile_all(session, stripe_billing)
    session.commit()
    assert report.errors == [] and report.orders_checked == 2
    session.expire_all()
    once = session.get(Order, once.id)  # type: ignore[assignment]
    sub_order = session.get(Order, sub_order.id)  # type: ignore[assignment]
    assert once.status == "paid" and once.entitlement_id is not None
    assert sub_order.status == "paid"
    sub = session.get(Subscription, sub_order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.entitlement_id is not None
    assert {c.get("order") for c in report.changed} >= {str(once.id), str(sub_order.id)}
    # Running it again changes nothing; the late webhook then changes nothing either.
    again = reconcile.reconcile_all(session, stripe_billing)
    assert again.changed == [] and again.orders_checked == 0


def test_lost_webhook_reconciled_by_the_order_page_and_api(
    client: TestClient, session: Session, stripe_billing: Billing, shop: Shop
) -> None:
    from tests.factories import api_token, auth
    from tests.web.helpers import HTML, login

    order, _ = checkout(session, stripe_billing, shop, shop.one_time, "pm_card_visa")
    token = auth(api_token(session, shop.buyer))
    session.commit()
    r = client.get(f"/api/v1/billing/orders/{order.id}", headers=token)
    assert r.status_code == 200 and r.json()["status"] == "paid" and r.json()["receipt_number"]
    other = make_account(session)
    second = orders.start_checkout(session, stripe_billing, account=other, tier=shop.one_time)
    session.commit()
    orders.pay(
        session, stripe_billing, order=second, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    client.headers.update(HTML)
    login(client, other.username)
    page = client.get(f"/checkout/orders/{second.id}")
    assert page.status_code == 200 and "Nothing is active yet" not in page.text
    session.expire_all()
    assert session.get(Order, second.id).status == "paid"  # type: ignore[union-attr]
