"""The lifecycle on the built-in test gateway: the embedded default, end to end in services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders, prices, sales, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Refund, Subscription
from store.billing.pricing import Buyer
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_AUTHENTICATE, CARD_DECLINE, CARD_SUCCESS, TestGateway
from store.db import utcnow
from store.errors import Conflict, Forbidden
from store.licensing.models import Entitlement
from store.registry.explain import access_for
from tests.billing.conftest import Shop
from tests.factories import make_account


def buy(session: Session, billing: Billing, shop: Shop, tier, card: str = CARD_SUCCESS) -> Order:  # type: ignore[no-untyped-def]
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=tier)
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=card))
    session.refresh(order)
    return order


def entitlement_of(session: Session, entitlement_id) -> Entitlement:  # type: ignore[no-untyped-def]
    ent = session.get(Entitlement, entitlement_id)
    assert ent is not None
    session.refresh(ent)
    return ent


def test_one_time_purchase_gives_perpetual_entitlement(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order = buy(session, billing, shop, shop.one_time)
    assert order.status == "paid" and order.paid_at is not None
    seller = shop.org.slug.upper()
    assert order.receipt_number == f"{seller}-000001"
    assert (
        order.total_minor == 9900 and order.payment_ref and order.gateway_ref == order.payment_ref
    )
    ent = entitlement_of(session, order.entitlement_id)
    assert ent.status == "active" and ent.ends_at is None and ent.source == "order"
    assert ent.source_ref == str(order.id)
    access = access_for(session, shop.buyer, shop.product)
    assert access.allowed and access.reason == "entitled"


def test_declined_card(session: Session, billing: Billing, shop: Shop) -> None:
    order = buy(session, billing, shop, shop.one_time, CARD_DECLINE)
    assert order.status == "failed" and "declined" in order.failure_reason
    assert order.entitlement_id is None
    assert not access_for(session, shop.buyer, shop.product).allowed


@pytest.mark.parametrize("approve", [True, False])
def test_authentication_required(
    session: Session, billing: Billing, shop: Shop, approve: bool
) -> None:
    order = buy(session, billing, shop, shop.one_time, CARD_AUTHENTICATE)
    assert order.status == "requires_action" and order.entitlement_id is None
    gateway = billing.gateway
    assert isinstance(gateway, TestGateway)
    gateway.authenticate(session, billing, order=order, approve=approve)
    session.refresh(order)
    assert order.status == ("paid" if approve else "failed")
    assert (order.entitlement_id is not None) is approve


def test_tax_is_added(session: Session, billing: Billing, shop: Shop) -> None:
    billing.settings.tax_rate_bps = 1900
    order = buy(session, billing, shop, shop.one_time)
    assert (order.amount_minor, order.tax_minor, order.total_minor) == (9900, 1881, 11781)
    assert order.status == "paid"


def test_checkout_records_the_quote(session: Session, billing: Billing, shop: Shop) -> None:
    billing.settings.tax_rates = "DE=19,FR=20"
    billing.settings.tax_home_country = "DE"
    buyer = Buyer(country="FR")
    expected = billing.quote(shop.monthly, buyer)
    order = orders.start_checkout(
        session, billing, account=shop.buyer, tier=shop.monthly, buyer=buyer
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.refresh(order)
    sub = order.subscription
    assert sub is not None
    assert (order.amount_minor, order.tax_minor, order.total_minor) == (4900, 980, 5880)
    assert order.total_minor == expected.total_minor
    assert (order.tax_country, order.tax_rate, order.reverse_charge) == ("FR", "20", False)
    assert (sub.amount_minor, sub.tax_minor, sub.tax_rate, sub.interval) == (
        4900,
        980,
        "20",
        "month",
    )
    # A renewal charges what the quote said (the test gateway's clock).
    assert sub.current_period_end is not None
    subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(seconds=1))
    renewal = session.scalars(
        select(Order).where(Order.subscription_id == sub.id, Order.id != order.id)
    ).one()
    assert (renewal.amount_minor, renewal.tax_minor) == (4900, 980)
    # A French business with a VAT id: reverse charge, no tax.
    business = Buyer(country="FR", vat_id="FR12345678901")
    one_time = orders.start_checkout(
        session, billing, account=make_account(session), tier=shop.one_time, buyer=business
    )
    assert (one_time.tax_minor, one_time.reverse_charge, one_time.vat_id) == (
        0,
        True,
        business.vat_id,
    )


def test_trial_checkout_charges_nothing_now(session: Session, billing: Billing, shop: Shop) -> None:
    order = buy(session, billing, shop, shop.trial)
    sub = order.subscription
    assert sub is not None and sub.trial_days == 14 and sub.status == "trialing"
    assert order.total_minor == 0 and sub.amount_minor == 49000


def test_price_history_is_never_mutated(session: Session, billing: Billing, shop: Shop) -> None:
    first = prices.ensure_price(session, billing, shop.monthly)
    assert prices.ensure_price(session, billing, shop.monthly).id == first.id
    shop.monthly.amount_minor = 5900
    shop.monthly.gateway_price_ref = None
    second = prices.ensure_price(session, billing, shop.monthly)
    assert second.id != first.id and second.gateway_ref != first.gateway_ref
    assert (first.amount_minor, second.amount_minor) == (4900, 5900)
    assert shop.monthly.gateway_price_ref == second.gateway_ref
    assert [p.id for p in prices.price_history(session, shop.monthly)] == [first.id, second.id]


def subscribe(
    session: Session, billing: Billing, shop: Shop, tier=None, card: str = CARD_SUCCESS
) -> tuple[Order, Subscription]:  # type: ignore[no-untyped-def]
    order = buy(session, billing, shop, tier or shop.monthly, card)
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    session.refresh(sub)
    return order, sub


def test_subscription_renewal_failure_grace_and_recovery(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    assert order.status == "paid" and sub.status == "active"
    ent = entitlement_of(session, sub.entitlement_id)
    assert ent.source == "subscription" and ent.ends_at == sub.current_period_end
    first_end = sub.current_period_end
    assert first_end is not None and first_end > utcnow() + timedelta(days=27)

    # The demo clock renews once the period is over.
    counts = subscriptions.expire_due(session, billing, first_end + timedelta(hours=1))
    assert counts["renewed"] == 1
    session.refresh(sub)
    ent = entitlement_of(session, sub.entitlement_id)
    assert sub.current_period_end is not None and sub.current_period_end > first_end
    assert ent.ends_at == sub.current_period_end
    renewals = session.query(Order).filter(Order.subscription_id == sub.id).all()
    assert len(renewals) == 2 and all(o.status == "paid" for o in renewals)


def test_cancel_at_period_end_and_resume(session: Session, billing: Billing, shop: Shop) -> None:
    _, sub = subscribe(session, billing, shop)
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    session.refresh(sub)
    assert sub.cancel_at_period_end and sub.status == "active"
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=False)
    session.refresh(sub)
    assert not sub.cancel_at_period_end
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    end = sub.current_period_end
    assert end is not None
    subscriptions.expire_due(session, billing, end + timedelta(minutes=1))
    session.refresh(sub)
    assert sub.status in ("canceled", "expired")
    ent = entitlement_of(session, sub.entitlement_id)
    assert ent.ends_at == end
    assert ent.effective_status(end + timedelta(minutes=1)) == "expired"


def test_trial(session: Session, billing: Billing, shop: Shop) -> None:
    order, sub = subscribe(session, billing, shop, shop.trial)
    assert sub.status == "trialing" and order.total_minor == 0 and order.status == "paid"
    ent = entitlement_of(session, sub.entitlement_id)
    assert ent.source == "trial" and sub.trial_end is not None and ent.ends_at == sub.trial_end
    assert sub.trial_end - utcnow() > timedelta(days=13)
    # The trial converts on the demo clock: a paid invoice extends the same entitlement.
    subscriptions.expire_due(session, billing, sub.trial_end + timedelta(minutes=1))
    session.refresh(sub)
    ent = entitlement_of(session, sub.entitlement_id)
    assert (
        sub.status == "active"
        and ent.ends_at is not None
        and ent.ends_at > sub.trial_end + timedelta(days=300)
    )


def test_declined_subscription_never_starts(session: Session, billing: Billing, shop: Shop) -> None:
    order, sub = subscribe(session, billing, shop, card=CARD_DECLINE)
    assert order.status == "failed" and sub.status == "canceled" and sub.entitlement_id is None
    # and the buyer may try again
    order, sub = subscribe(session, billing, shop)
    assert order.status == "paid" and sub.status == "active"


def test_subscription_authentication(session: Session, billing: Billing, shop: Shop) -> None:
    order, sub = subscribe(session, billing, shop, card=CARD_AUTHENTICATE)
    assert order.status == "requires_action" and sub.status == "incomplete"
    gateway = billing.gateway
    assert isinstance(gateway, TestGateway)
    gateway.authenticate(session, billing, order=order, approve=True)
    session.refresh(order)
    session.refresh(sub)
    assert order.status == "paid" and sub.status == "active" and sub.entitlement_id


def test_already_subscribed(session: Session, billing: Billing, shop: Shop) -> None:
    subscribe(session, billing, shop)
    with pytest.raises(Conflict):
        orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)


def test_refunds_partial_then_full(session: Session, billing: Billing, shop: Shop) -> None:
    order = buy(session, billing, shop, shop.one_time)
    with pytest.raises(Forbidden):
        orders.refund(session, billing, actor=shop.buyer, order=order, amount_minor=100)
    orders.refund(session, billing, actor=shop.admin, order=order, amount_minor=1000)
    session.refresh(order)
    assert order.status == "partially_refunded" and order.refunded_minor == 1000
    assert entitlement_of(session, order.entitlement_id).status == "active"
    orders.refund(session, billing, actor=shop.admin, order=order)
    session.refresh(order)
    assert order.status == "refunded" and order.refunded_minor == 9900
    assert entitlement_of(session, order.entitlement_id).status == "revoked"
    with pytest.raises(Conflict):
        orders.refund(session, billing, actor=shop.admin, order=order)


def test_full_refund_of_subscription_payment_cancels_it(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order, sub = subscribe(session, billing, shop)
    orders.refund(session, billing, actor=shop.admin, order=order)
    session.refresh(sub)
    assert sub.status in ("canceled", "expired")
    assert entitlement_of(session, sub.entitlement_id).status == "revoked"


def test_sales_report_splits_refunds_and_books_them_when_made(
    session: Session, billing: Billing, shop: Shop
) -> None:
    billing.settings.tax_rate_bps = 1900
    order = buy(session, billing, shop, shop.one_time)  # 99.00 + 18.81 tax
    trial = orders.start_checkout(session, billing, account=make_account(session), tier=shop.trial)
    orders.pay(session, billing, order=trial, payment=PaymentInput(card_number=CARD_SUCCESS))
    assert order.paid_at is not None
    later = order.paid_at + timedelta(days=40)
    orders.apply_refund(session, order, refunded_total=5000, at=later)
    orders.apply_refund(session, order, refunded_total=order.total_minor, at=later)
    rows = sales.sales_of(session, actor=shop.admin, org=shop.org)
    sale = next(r for r in rows if r.month == f"{order.paid_at:%Y-%m}")
    assert (sale.orders, sale.gross_minor, sale.tax_minor) == (1, 11781, 1881)  # no trial row
    assert sale.net_minor == 9900 and sale.refunded_minor == 0
    refund = next(r for r in rows if r.month == f"{later:%Y-%m}")
    assert (refund.orders, refund.refunded_net_minor, refund.refunded_tax_minor) == (0, 9900, 1881)
    assert refund.net_minor == -9900
    totals = sales.totals(rows)["usd"]
    assert totals["net_minor"] == 0 and totals["refunded_minor"] == 11781
    assert all(r.tier != shop.trial.slug for r in rows)
    steps = session.scalars(select(Refund).where(Refund.order_id == order.id)).all()
    assert sorted((s.amount_minor, s.tax_minor) for s in steps) == [(5000, 798), (6781, 1083)]
