"""Coupons in Stripe mode, through the real SDK against localstripe: the PaymentIntent and
the subscription's invoices charge the quote (discount and its tax included), and while a
coupon's duration covers the next charge, that invoice gets the discount line too."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import coupons, orders
from store.billing.gateway import PaymentInput
from store.billing.models import Coupon, GatewayCustomer, Order, Subscription
from store.billing.pricing import Buyer
from store.billing.runtime import Billing
from store.billing.stripe_gateway import StripeGateway
from tests.billing.conftest import Shop
from tests.billing.stripe_env import LocalStripe
from tests.billing.test_stripe_localstripe import relay
from tests.factories import make_account

pytestmark = pytest.mark.e2e


def v1(billing: Billing) -> Any:
    assert isinstance(billing.gateway, StripeGateway)
    return billing.gateway.v1


def make(session: Session, shop: Shop, code: str, **kw: Any) -> None:
    spec = coupons.CouponSpec(code=code, product=shop.product.repository, **kw)
    coupons.create(session, actor=shop.publisher, org=shop.org, spec=spec)


def test_one_time_payment_charges_the_discounted_quote(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    stripe_billing.settings.tax_rates = "DE=19"
    make(session, shop, "TENOFF", amount_off="10")
    buyer = Buyer(country="DE")
    order = orders.start_checkout(
        session,
        stripe_billing,
        account=shop.buyer,
        tier=shop.one_time,
        buyer=buyer,
        coupon_code="tenoff",
    )
    session.commit()
    shown = stripe_billing.quote(shop.one_time, buyer, coupons.terms(_coupon(session, "TENOFF")))
    outcome = orders.pay(
        session, stripe_billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    # 99.00 - 10.00 = 89.00; tax 18.81 - 1.90 = 16.91.
    assert (order.amount_minor, order.tax_minor, order.total_minor) == (8900, 1691, 10591)
    assert shown.total_minor == order.total_minor
    pi = v1(stripe_billing).payment_intents.retrieve(outcome.payment_ref)
    assert (pi["amount"], pi["metadata"]["order_id"]) == (10591, str(order.id))
    relay(client, localstripe.recorder.wait_for("payment_intent.succeeded", outcome.payment_ref))
    session.expire_all()
    paid = session.get(Order, order.id)
    assert paid is not None and paid.status == "paid" and paid.coupon_code == "TENOFF"


def _coupon(session: Session, code: str) -> Coupon:
    coupon = session.scalar(select(Coupon).where(Coupon.code == code))
    assert coupon is not None
    return coupon


def test_subscription_invoices_take_the_discount_for_its_duration(
    client: TestClient,
    session: Session,
    stripe_billing: Billing,
    shop: Shop,
    localstripe: LocalStripe,
) -> None:
    stripe_billing.settings.tax_rates = "DE=19"
    make(session, shop, "TWOMONTHS", percent_off="25", duration="repeating", duration_months=2)
    make(session, shop, "JUSTONCE", percent_off="25")
    buyer = Buyer(country="DE")
    api = v1(stripe_billing)
    order = orders.start_checkout(
        session,
        stripe_billing,
        account=shop.buyer,
        tier=shop.monthly,
        buyer=buyer,
        coupon_code="TWOMONTHS",
    )
    session.commit()
    outcome = orders.pay(
        session, stripe_billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    # 49.00 - 12.25 = 36.75; tax 9.31 - 2.33 = 6.98 (Stripe taxes each line, as the quote).
    assert (order.amount_minor, order.tax_minor, order.discount_minor) == (3675, 698, 1225)
    invoice = api.invoices.retrieve(outcome.invoice_ref)
    assert (invoice["total"], invoice["tax"]) == (4373, 698) == (order.total_minor, order.tax_minor)
    amounts = sorted(line["amount"] for line in invoice["lines"]["data"])
    assert amounts == [-1225, 4900]
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    session.expire_all()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.paid_charges == 1
    # The second month is covered too: a discount line waits for the next invoice...
    assert (sub.amount_minor, sub.tax_minor, sub.discount_minor) == (3675, 698, 1225)
    pending = _pending_items(api, sub)
    assert [(i["amount"], i["subscription"]) for i in pending] == [(-1225, sub.gateway_ref)]
    # ...once: a redelivered event adds no second one.
    relay(
        client, localstripe.recorder.wait_for("invoice.payment_succeeded", outcome.subscription_ref)
    )
    assert len(_pending_items(api, sub)) == 1
    # A once coupon: nothing for the second invoice.
    other = make_account(session)
    once = orders.start_checkout(
        session,
        stripe_billing,
        account=other,
        tier=shop.monthly,
        buyer=buyer,
        coupon_code="JUSTONCE",
    )
    session.commit()
    done = orders.pay(
        session, stripe_billing, order=once, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    assert api.invoices.retrieve(done.invoice_ref)["total"] == 4373
    relay(client, localstripe.recorder.wait_for("invoice.payment_succeeded", done.subscription_ref))
    session.expire_all()
    sub2 = session.get(Subscription, once.subscription_id)
    assert sub2 is not None and (sub2.amount_minor, sub2.tax_minor, sub2.discount_minor) == (
        4900,
        931,
        0,
    )
    assert _pending_items(api, sub2) == []


def _pending_items(api: Any, sub: Subscription) -> list[Any]:
    from sqlalchemy import select

    session = Session.object_session(sub)
    assert session is not None
    customer = session.scalar(
        select(GatewayCustomer.gateway_ref).where(
            GatewayCustomer.account_id == sub.account_id, GatewayCustomer.gateway == "stripe"
        )
    )
    items = api.invoice_items.list({"customer": customer})
    return [i for i in items["data"] if not i["invoice"]]
