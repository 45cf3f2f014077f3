"""Plan changes in Stripe mode, through the real SDK against localstripe: the store charges
the proration it computed (localstripe cannot take ``proration_behavior``), the gateway's
subscription follows the new plan only once paid, and its own proration lines are removed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing import orders, plan_changes, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import GatewayCustomer, Order, Subscription
from store.billing.pricing import Buyer
from store.billing.runtime import Billing
from store.billing.stripe_gateway import StripeGateway, plan_id
from store.catalog.models import Product, Tier
from store.db import utcnow
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.stripe_env import LocalStripe
from tests.billing.test_plan_changes import plans  # noqa: F401  (the fixture)
from tests.billing.test_stripe_localstripe import relay
from tests.factories import tier_of

pytestmark = pytest.mark.e2e


def v1(billing: Billing) -> Any:
    assert isinstance(billing.gateway, StripeGateway)
    return billing.gateway.v1


def subscribe(
    client: TestClient,
    session: Session,
    billing: Billing,
    localstripe: LocalStripe,
    shop: Shop,
    tier: Tier,
) -> Subscription:
    order = orders.start_checkout(
        session, billing, account=shop.buyer, tier=tier, buyer=Buyer(country="DE")
    )
    session.commit()
    outcome = orders.pay(
        session, billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    session.expire_all()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active" and sub.current_period_end is not None
    # Half of the period used, as far as the store's proration is concerned (localstripe
    # has no clock to move).
    sub.current_period_start = utcnow() - timedelta(days=15)
    sub.current_period_end = utcnow() + timedelta(days=15)
    session.commit()
    return sub


def _customer(session: Session, sub: Subscription) -> str:
    ref = session.scalar(
        select(GatewayCustomer.gateway_ref).where(GatewayCustomer.account_id == sub.account_id)
    )
    assert ref is not None
    return ref


def _pending(api: Any, customer: str) -> list[Any]:
    return [i for i in api.invoice_items.list({"customer": customer})["data"] if not i["invoice"]]


def test_upgrade_charges_the_computed_proration(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    plans: Product,  # noqa: F811
) -> None:
    stripe_billing.settings.tax_rates = "DE=19"
    api = v1(stripe_billing)
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(client, session, stripe_billing, localstripe, shop, basic)
    change = plan_changes.change_plan(
        session, stripe_billing, sub=sub, tier=pro, actor=shop.buyer, key="stripe-up-1"
    )
    session.commit()
    assert change.status == "applied", change.failure_reason
    order = change.order
    assert order is not None and order.status == "paid" and order.payment_ref
    # ~half of (3000 - 1000) plus 19% tax, charged as one PaymentIntent of that total.
    assert 990 <= order.amount_minor <= 1010 and order.tax_minor == change.due_tax_minor
    pi = api.payment_intents.retrieve(order.payment_ref)
    assert pi["amount"] == order.total_minor and pi["metadata"]["order_id"] == str(order.id)
    remote = api.subscriptions.retrieve(sub.gateway_ref)
    assert remote["items"]["data"][0]["plan"]["id"].startswith(f"store-{pro.id.hex}")
    # localstripe's own "Unused time" line for the switch is gone: nothing pending.
    assert _pending(api, _customer(session, sub)) == []
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.tier_id == pro.id and ent.seats == 5
    # The PaymentIntent's event pays nothing more.
    relay(client, localstripe.recorder.wait_for("payment_intent.succeeded", order.payment_ref))
    session.expire_all()
    count = session.scalar(
        select(func.count()).select_from(Order).where(Order.subscription_id == sub.id)
    )
    assert count == 2
    # Downgrade back at once: nothing charged, the credit waits for the next invoice.
    back = plan_changes.change_plan(
        session, stripe_billing, sub=sub, tier=basic, actor=shop.buyer, key="stripe-down-1"
    )
    session.commit()
    assert back.status == "applied" and back.order_id is None
    assert back.carried_net_minor == change.charge_net_minor - change.credit_net_minor
    pending = _pending(api, _customer(session, sub))
    assert [(i["amount"], i["subscription"]) for i in pending] == [
        (-back.carried_net_minor, sub.gateway_ref)
    ]
    remote = api.subscriptions.retrieve(sub.gateway_ref)
    assert remote["items"]["data"][0]["plan"]["id"].startswith(f"store-{basic.id.hex}")


def test_a_declined_charge_changes_nothing_at_the_gateway(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    plans: Product,  # noqa: F811
) -> None:
    api = v1(stripe_billing)
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(client, session, stripe_billing, localstripe, shop, basic)
    change = plan_changes.change_plan(
        session, stripe_billing, sub=sub, tier=pro, actor=shop.buyer,
        payment=PaymentInput(payment_method="pm_card_chargeCustomerFail"),
    )  # fmt: skip
    session.commit()
    assert change.status == "failed" and change.failure_code == "card_declined"
    session.refresh(sub)
    assert sub.tier_id == basic.id
    remote = api.subscriptions.retrieve(sub.gateway_ref)
    assert remote["items"]["data"][0]["plan"]["id"].startswith(f"store-{basic.id.hex}")
    assert _pending(api, _customer(session, sub)) == []


def test_interval_change_starts_a_new_gateway_subscription(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    plans: Product,  # noqa: F811
) -> None:
    stripe_billing.settings.tax_rates = "DE=19"
    api = v1(stripe_billing)
    pro, year = tier_of(plans, "pro"), tier_of(plans, "pro-year")
    sub = subscribe(client, session, stripe_billing, localstripe, shop, pro)
    old_ref = sub.gateway_ref
    change = plan_changes.change_plan(
        session, stripe_billing, sub=sub, tier=year, actor=shop.buyer, key="stripe-year-1"
    )
    session.commit()
    assert change.status == "applied", change.failure_reason
    assert change.replaced_gateway_ref == old_ref and sub.gateway_ref != old_ref
    order = change.order
    assert order is not None and order.status == "paid"
    invoice = api.invoices.retrieve(order.gateway_ref)
    # The new plan's year less the credit (each line taxed at 19%), as the store computed.
    assert invoice["total"] == order.total_minor
    assert abs(order.total_minor - change.due_minor) <= 1
    lines = sorted(line["amount"] for line in invoice["lines"]["data"])
    assert lines == [-change.credit_net_minor, 30000]
    assert api.subscriptions.retrieve(old_ref)["status"] == "canceled"
    # The old subscription's deletion event and the new one's invoice change nothing more.
    relay(client, localstripe.recorder.wait_for("customer.subscription.deleted", old_ref))
    relay(client, localstripe.recorder.wait_for("invoice.payment_succeeded", sub.gateway_ref))
    session.expire_all()
    fresh = session.get(Subscription, sub.id)
    assert fresh is not None and fresh.status == "active" and fresh.interval == "year"
    count = session.scalar(
        select(func.count()).select_from(Order).where(Order.subscription_id == sub.id)
    )
    assert count == 2
    subscriptions.refresh_from_gateway(session, stripe_billing, fresh, {}, at=utcnow())
    assert fresh.current_period_end is not None
    assert fresh.current_period_end > utcnow() + timedelta(days=360)
    assert plan_id  # the plan ids are the adapter's


def test_a_coupon_moves_with_the_plan(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
    plans: Product,  # noqa: F811
) -> None:
    """A product-wide coupon: the next invoice's discount line follows the new plan, and a
    new interval's first invoice takes the coupon's discount as the quote did."""
    from store.billing import coupons

    api = v1(stripe_billing)
    spec = coupons.CouponSpec(
        code="QUARTER", product=plans.repository, percent_off="25", duration="forever"
    )
    coupons.create(session, actor=shop.publisher, org=shop.org, spec=spec)
    basic, pro, year = tier_of(plans, "basic"), tier_of(plans, "pro"), tier_of(plans, "pro-year")
    order = orders.start_checkout(
        session, stripe_billing, account=shop.buyer, tier=basic, coupon_code="QUARTER"
    )
    session.commit()
    outcome = orders.pay(
        session, stripe_billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    session.expire_all()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active"
    sub.current_period_start = utcnow() - timedelta(days=15)
    sub.current_period_end = utcnow() + timedelta(days=15)
    session.commit()
    customer = _customer(session, sub)
    assert [i["amount"] for i in _pending(api, customer)] == [-250]
    up = plan_changes.change_plan(session, stripe_billing, sub=sub, tier=pro, actor=shop.buyer)
    session.commit()
    assert up.status == "applied" and sub.discount_minor == 750
    assert [(i["amount"], i["subscription"]) for i in _pending(api, customer)] == [
        (-750, sub.gateway_ref)
    ]
    old_ref = sub.gateway_ref
    yearly = plan_changes.change_plan(session, stripe_billing, sub=sub, tier=year, actor=shop.buyer)
    session.commit()
    assert yearly.status == "applied", yearly.failure_reason
    assert yearly.charge_net_minor == 22500  # 30000 less 25%
    invoice = api.invoices.retrieve(yearly.order.gateway_ref)  # type: ignore[union-attr]
    lines = sorted(line["amount"] for line in invoice["lines"]["data"])
    assert lines == sorted([30000, -7500, -yearly.credit_net_minor])
    assert invoice["total"] == yearly.due_minor
    # The monthly plan's line is not left behind, and the new subscription's next invoice
    # has its own discount line.
    pending = _pending(api, customer)
    assert all(i["subscription"] != old_ref for i in pending)
    assert [(i["amount"], i["subscription"]) for i in pending] == [(-7500, sub.gateway_ref)]
