"""Seats bought by quantity where a tier has a seat limit: the quote, the order, the license's
seats (its entitlement), the receipt, the API and the checkout page; other tiers sell one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders, receipts, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Order
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.errors import ValidationFailed
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.factories import api_token, auth
from tests.web.helpers import HTML, csrf_of, login


@pytest.fixture
def seated(session: Session, shop: Shop) -> Shop:
    shop.one_time.seats = 5
    shop.monthly.seats = 2
    session.flush()
    return shop


def test_quantity_buys_that_many_times_the_seats(
    session: Session, billing: Billing, seated: Shop
) -> None:
    billing.settings.tax_rate_bps = 1000
    order = orders.start_checkout(
        session, billing, account=seated.buyer, tier=seated.one_time, quantity=3
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.refresh(order)
    assert (order.quantity, order.amount_minor, order.tax_minor) == (3, 29700, 2970)
    ent = session.get(Entitlement, order.entitlement_id)
    assert ent is not None and ent.seats == 15
    receipt = receipts.build(order, tax_label="VAT", store_url="http://store.test")
    assert "(3 × 5 seats)" in receipt.lines[0].label


def test_subscription_seats_renew_at_the_quantity(
    session: Session, billing: Billing, seated: Shop
) -> None:
    order = orders.start_checkout(
        session, billing, account=seated.buyer, tier=seated.monthly, quantity=4
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    sub = order.subscription
    assert sub is not None and sub.quantity == 4
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.seats == 8
    session.refresh(sub)
    assert sub.current_period_end is not None
    from datetime import timedelta

    subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(minutes=1))
    paid = session.scalars(
        select(Order.amount_minor).where(Order.subscription_id == sub.id).order_by(Order.paid_at)
    ).all()
    assert paid == [19600, 19600]


def test_tiers_without_a_seat_limit_sell_one(
    session: Session, billing: Billing, shop: Shop
) -> None:
    with pytest.raises(ValidationFailed) as err:
        orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time, quantity=2)
    assert err.value.code == "quantity_not_per_seat"


def test_api_and_page(client: TestClient, session: Session, billing: Billing, seated: Shop) -> None:
    token = auth(api_token(session, seated.buyer))
    session.commit()
    q = client.get(
        "/api/v1/billing/quote", params={"tier_id": str(seated.monthly.id), "quantity": 3}
    ).json()
    assert (q["quantity"], q["total_minor"]) == (3, 14700)
    bad = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(seated.trial.id), "card_number": CARD_SUCCESS, "quantity": 3},
        headers=token,
    )
    assert bad.status_code == 422 and bad.json()["error"] == "quantity_not_per_seat"
    assert bad.json()["field"] == "quantity"
    client.headers.update(HTML)
    login(client, seated.buyer.username)
    page = client.get(f"/checkout/{seated.one_time.id}", params={"quantity": "2"})
    assert page.status_code == 200 and "2 × $99.00, 10 seats" in page.text
    wrong = client.get(f"/checkout/{seated.one_time.id}", params={"quantity": "two"})
    assert wrong.status_code == 422 and "Quantity must be a whole number" in wrong.text
    r = client.post(
        f"/checkout/{seated.one_time.id}",
        data={"card_number": CARD_SUCCESS, "quantity": "2", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    order = session.scalar(select(Order).where(Order.account_id == seated.buyer.id))
    assert order is not None and (order.quantity, order.total_minor) == (2, 19800)
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(seated.monthly.id), "card_number": CARD_SUCCESS, "quantity": 0},
        headers={**token, "accept": "application/json"},
    )
    assert r.status_code == 422


@pytest.mark.e2e
def test_stripe_subscription_item_carries_the_quantity(
    session: Session, stripe_billing: Billing, seated: Shop
) -> None:
    from store.billing.stripe_gateway import StripeGateway

    order = orders.start_checkout(
        session, stripe_billing, account=seated.buyer, tier=seated.monthly, quantity=3
    )
    session.commit()
    outcome = orders.pay(
        session, stripe_billing, order=order, payment=PaymentInput(payment_method="pm_card_visa")
    )
    session.commit()
    gateway = stripe_billing.gateway
    assert isinstance(gateway, StripeGateway)
    sub = gateway.v1.subscriptions.retrieve(outcome.subscription_ref)
    assert sub["items"]["data"][0]["quantity"] == 3
    assert gateway.v1.invoices.retrieve(outcome.invoice_ref)["total"] == 14700 == order.total_minor
