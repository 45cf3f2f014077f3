"""Coupons on the test gateway: publishers make them, checkouts redeem them through the one
quote, renewals discount only the charges the coupon's duration covers, limits hold."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import coupons, orders, receipts, sales, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Coupon, CouponRedemption, Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_DECLINE, CARD_SUCCESS
from store.db import utcnow
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.billing.conftest import Shop
from tests.factories import api_token, auth, make_account
from tests.web.helpers import HTML, csrf_of, login


def make_coupon(session: Session, shop: Shop, code: str = "SAVE25", **kw: Any) -> Coupon:
    spec: dict[str, Any] = {"code": code, "product": shop.product.repository}
    if "amount_off" not in kw:
        spec["percent_off"] = "25"
    spec.update(kw)
    return coupons.create(
        session, actor=shop.publisher, org=shop.org, spec=coupons.CouponSpec(**spec)
    )


def buy(
    session: Session,
    billing: Billing,
    shop: Shop,
    tier: Any,
    code: str | None,
    card: str = CARD_SUCCESS,
    account: Any = None,
) -> Order:
    order = orders.start_checkout(
        session, billing, account=account or shop.buyer, tier=tier, coupon_code=code
    )
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=card))
    session.refresh(order)
    return order


def redemption_of(session: Session, order: Order) -> CouponRedemption:
    row = session.scalar(select(CouponRedemption).where(CouponRedemption.order_id == order.id))
    assert row is not None
    session.refresh(row)
    return row


# --- publishers ----------------------------------------------------------------------------


def test_publishers_make_coupons_with_every_field_checked(session: Session, shop: Shop) -> None:
    coupon = make_coupon(
        session, shop, " launch-10 ", percent_off=None, amount_off="10", duration="forever"
    )
    assert (coupon.code, coupon.amount_off_minor, coupon.currency) == ("LAUNCH-10", 1000, "usd")
    assert coupons.describe(coupon) == "$10.00 off forever" and coupons.state(coupon) == "active"
    monthly = make_coupon(
        session, shop, "PRO3", tier="pro", duration="repeating", duration_months=3
    )
    assert monthly.tier_id == shop.monthly.id
    assert coupons.describe(monthly) == "25% off for 3 months"
    pair = ("percent_off", "amount_off")
    bad: list[tuple[dict[str, Any], str, str | tuple[str, ...]]] = [
        ({"percent_off": "0"}, "bad_coupon_percent", "percent_off"),
        ({"percent_off": "100.001"}, "bad_coupon_percent", "percent_off"),
        ({"percent_off": "abc"}, "bad_coupon_percent", "percent_off"),
        ({"percent_off": None, "amount_off": "0"}, "bad_coupon_amount", "amount_off"),
        ({"percent_off": None, "amount_off": "1.001"}, "bad_coupon_amount", "amount_off"),
        ({"percent_off": None, "amount_off": "5", "currency": "eur"}, "coupon_currency",
         ("currency", "amount_off")),
        ({"percent_off": "5", "amount_off": "5"}, "coupon_percent_or_amount", pair),
        ({"percent_off": None, "amount_off": None}, "coupon_percent_or_amount", pair),
        ({"duration": "weekly"}, "bad_coupon_duration", "duration"),
        ({"duration": "repeating"}, "bad_coupon_duration", "duration_months"),
        ({"duration": "once", "duration_months": 2}, "bad_coupon_duration", "duration_months"),
        ({"max_redemptions": 0}, "bad_coupon_limit", "max_redemptions"),
        ({"expires_at": utcnow() - timedelta(minutes=1)}, "bad_coupon_expiry", "expires_at"),
    ]  # fmt: skip
    for i, (fields, code, field) in enumerate(bad):
        with pytest.raises(ValidationFailed) as err:
            make_coupon(session, shop, f"BAD{i}", **fields)
        assert (err.value.code, err.value.field) == (code, field), (fields, err.value.detail)
    with pytest.raises(ValidationFailed) as err:
        make_coupon(session, shop, "x")
    assert (err.value.code, err.value.field) == ("bad_coupon_code", "code")
    with pytest.raises(NotFound) as missing:
        make_coupon(session, shop, "NOTIER", tier="nope")
    assert missing.value.field == "tier"
    with pytest.raises(Conflict) as dup:
        make_coupon(session, shop, "Launch-10")
    assert (dup.value.code, dup.value.field) == ("coupon_exists", "code")
    with pytest.raises(Forbidden):
        coupons.create(
            session,
            actor=shop.buyer,
            org=shop.org,
            spec=coupons.CouponSpec(code="MINE", product=shop.product.repository, percent_off="5"),
        )
    listed = coupons.coupons_of(session, actor=shop.publisher, org=shop.org)
    assert {c.code for c in listed} == {"LAUNCH-10", "PRO3"}
    coupons.deactivate(session, actor=shop.publisher, org=shop.org, coupon_id=coupon.id)
    assert coupons.state(coupon) == "inactive"


# --- checkout ------------------------------------------------------------------------------


def test_one_time_purchase_with_a_coupon_charges_the_quote(
    session: Session, billing: Billing, shop: Shop
) -> None:
    billing.settings.tax_rate_bps = 1900
    make_coupon(session, shop)
    quoted = billing.quote(shop.one_time, None, coupons.terms(make_coupon(session, shop, "X25")))
    order = buy(session, billing, shop, shop.one_time, "save25")
    assert order.status == "paid" and order.coupon_code == "SAVE25"
    # 99.00 - 24.75 = 74.25; tax 18.81 - 4.70 = 14.11 (the price line's less the discount's).
    assert (order.discount_minor, order.amount_minor, order.tax_minor) == (2475, 7425, 1411)
    assert (order.amount_minor, order.tax_minor, order.total_minor) == (
        quoted.net_minor,
        quoted.tax_minor,
        quoted.total_minor,
    )
    receipt = receipts.build(order, tax_label="VAT", store_url="http://store.test")
    text = " ".join(f"{line.label} {line.amount}" for line in receipt.lines)
    assert "$99.00" in text and "Discount (coupon SAVE25) -$24.75" in text and "$14.11" in text
    assert redemption_of(session, order).status == "redeemed"
    coupon = coupons.for_checkout(session, code="SAVE25", tier=shop.one_time, account=None)
    assert coupon.times_redeemed == 1
    row = sales.sales_of(session, actor=shop.publisher, org=shop.org)[0]
    assert (row.gross_minor, row.tax_minor, row.discount_minor) == (8836, 1411, 2475)


def test_coupons_that_cannot_be_used_say_why(
    session: Session, billing: Billing, shop: Shop
) -> None:
    make_coupon(session, shop, "PROONLY", tier="pro")
    make_coupon(session, shop, "EUROS", percent_off=None, amount_off="5", tier="pro")
    gone = make_coupon(session, shop, "GONE")
    coupons.deactivate(session, actor=shop.publisher, org=shop.org, coupon_id=gone.id)
    late = make_coupon(session, shop, "LATE", expires_at=utcnow() + timedelta(seconds=30))
    late.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    cases = {
        "NOPE": "coupon_not_found",
        "x!": "coupon_not_found",
        "PROONLY": "coupon_not_for_tier",
        "GONE": "coupon_inactive",
        "LATE": "coupon_expired",
    }
    for code, expected in cases.items():
        with pytest.raises(ValidationFailed) as err:
            orders.start_checkout(
                session, billing, account=shop.buyer, tier=shop.one_time, coupon_code=code
            )
        assert err.value.code == expected, code
    shop.monthly.currency = "eur"
    session.flush()
    with pytest.raises(ValidationFailed) as err:
        orders.start_checkout(
            session, billing, account=shop.buyer, tier=shop.monthly, coupon_code="EUROS"
        )
    assert err.value.code == "coupon_currency"
    assert session.scalar(select(Order).where(Order.account_id == shop.buyer.id)) is None


def test_limits_failures_and_refunds(session: Session, billing: Billing, shop: Shop) -> None:
    coupon = make_coupon(session, shop, "ONCE", max_redemptions=2, once_per_customer=True)
    # A declined card gives the redemption back.
    failed = buy(session, billing, shop, shop.one_time, "ONCE", CARD_DECLINE)
    assert failed.status == "failed" and redemption_of(session, failed).status == "released"
    session.refresh(coupon)
    assert coupon.times_redeemed == 0
    paid = buy(session, billing, shop, shop.one_time, "ONCE")
    assert paid.status == "paid" and paid.discount_minor == 2475
    # A refund releases nothing: the coupon was used.
    orders.refund(session, billing, actor=shop.admin, order=paid)
    assert paid.status == "refunded" and redemption_of(session, paid).status == "redeemed"
    session.refresh(coupon)
    assert coupon.times_redeemed == 1
    # Once per customer: the buyer may buy again, but not with this coupon.
    with pytest.raises(ValidationFailed) as again:
        orders.start_checkout(
            session, billing, account=shop.buyer, tier=shop.monthly, coupon_code="ONCE"
        )
    assert again.value.code == "coupon_already_used"
    other = make_account(session)
    assert buy(session, billing, shop, shop.one_time, "ONCE", account=other).status == "paid"
    with pytest.raises(ValidationFailed) as used_up:
        orders.start_checkout(
            session,
            billing,
            account=make_account(session),
            tier=shop.one_time,
            coupon_code="ONCE",
        )
    assert used_up.value.code == "coupon_used_up"
    session.refresh(coupon)
    assert coupon.times_redeemed == 2 and coupons.state(coupon) == "used up"


def test_a_hundred_percent_coupon_is_free_but_recorded(
    session: Session, billing: Billing, shop: Shop
) -> None:
    billing.settings.tax_rate_bps = 2000
    make_coupon(session, shop, "FREE", percent_off="100")
    order = buy(session, billing, shop, shop.one_time, "FREE")
    assert order.status == "paid" and order.total_minor == 0 and order.discount_minor == 9900
    assert order.entitlement_id is not None


# --- subscriptions: the coupon's duration ----------------------------------------------------


def _charges(session: Session, sub: Subscription) -> list[tuple[int, int, int]]:
    rows = session.scalars(
        select(Order)
        .where(Order.subscription_id == sub.id, Order.paid_at.is_not(None))
        .order_by(Order.paid_at, Order.created_at)
    )
    return [(o.amount_minor, o.tax_minor, o.discount_minor) for o in rows]


def _renew(session: Session, billing: Billing, sub: Subscription, times: int) -> None:
    for _ in range(times):
        session.refresh(sub)
        assert sub.current_period_end is not None
        subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(minutes=1))


@pytest.mark.parametrize(
    ("duration", "months", "discounted"),
    [("once", None, 1), ("repeating", 2, 2), ("forever", None, 4)],
)
def test_renewals_are_discounted_for_the_coupons_duration(
    session: Session,
    billing: Billing,
    shop: Shop,
    duration: str,
    months: int | None,
    discounted: int,
) -> None:
    billing.settings.tax_rate_bps = 1000
    make_coupon(session, shop, "SUB", duration=duration, duration_months=months)
    order = buy(session, billing, shop, shop.monthly, "SUB")
    sub = order.subscription
    assert sub is not None and sub.status == "active" and sub.coupon_code == "SUB"
    _renew(session, billing, sub, 3)
    full = (4900, 490, 0)
    off = (3675, 367, 1225)  # 49.00 - 12.25; tax 4.90 - 1.23 (per line)
    assert _charges(session, sub) == [off] * discounted + [full] * (4 - discounted)
    session.refresh(sub)
    assert sub.paid_charges == 4
    # What the subscription says it renews at next is the next charge's quote.
    assert (sub.amount_minor, sub.tax_minor, sub.discount_minor) == (
        off if discounted > 4 or duration == "forever" else full
    )


def test_a_trial_is_not_a_charge(session: Session, billing: Billing, shop: Shop) -> None:
    make_coupon(session, shop, "FIRST", percent_off="50")
    order = buy(session, billing, shop, shop.trial, "FIRST")
    sub = order.subscription
    assert sub is not None and sub.status == "trialing"
    assert (order.total_minor, order.discount_minor, order.coupon_code) == (0, 0, None)
    assert (sub.amount_minor, sub.discount_minor) == (24500, 24500)
    session.refresh(sub)
    assert sub.trial_end is not None
    subscriptions.expire_due(session, billing, sub.trial_end + timedelta(minutes=1))
    _renew(session, billing, sub, 1)
    assert _charges(session, sub) == [(0, 0, 0), (24500, 0, 24500), (49000, 0, 0)]
    assert redemption_of(session, order).status == "redeemed"


# --- the JSON API and the pages ---------------------------------------------------------------


def test_api_quote_checkout_and_management(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    owner = auth(api_token(session, shop.publisher))
    buyer = auth(api_token(session, shop.buyer))
    session.commit()
    base = f"/api/v1/billing/coupons/{shop.org.slug}"
    body = {"code": "api20", "product": shop.product.repository, "percent_off": "20"}
    r = client.post(base, json=body, headers=owner)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["code"] == "API20" and made["terms"] == "20% off once" and made["state"] == "active"
    taken = client.post(base, json=body, headers=owner).json()
    assert (taken["error"], taken["field"]) == ("coupon_exists", "code")
    assert client.post(base, json=body, headers=buyer).status_code == 403
    bad = client.post(base, json={**body, "code": "ZZZ", "percent_off": "101"}, headers=owner)
    assert bad.status_code == 422 and bad.json()["error"] == "bad_coupon_percent"
    assert bad.json()["field"] == "percent_off"
    either = client.post(base, json={**body, "code": "ZZZ", "amount_off": "5"}, headers=owner)
    assert either.json()["field"] == ["percent_off", "amount_off"]
    q = client.get(
        "/api/v1/billing/quote", params={"tier_id": str(shop.one_time.id), "coupon": "api20"}
    ).json()
    assert (q["discount_minor"], q["total_minor"], q["coupon_code"]) == (1980, 7920, "API20")
    nope = client.get(
        "/api/v1/billing/quote", params={"tier_id": str(shop.one_time.id), "coupon": "nope"}
    )
    assert nope.status_code == 422 and nope.json()["error"] == "coupon_not_found"
    assert nope.json()["field"] == "coupon"  # the quote's and the checkout's input
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.one_time.id), "card_number": CARD_SUCCESS, "coupon": "api20"},
        headers=buyer,
    )
    assert r.status_code == 201, r.text
    order = r.json()["order"]
    assert (order["total_minor"], order["discount_minor"], order["coupon_code"]) == (
        7920,
        1980,
        "API20",
    )
    listed = client.get(base, headers=owner).json()
    assert [c["times_redeemed"] for c in listed] == [1]
    r = client.post(f"{base}/{made['id']}/deactivate", headers=owner)
    assert r.status_code == 200 and r.json()["state"] == "inactive"
    other = auth(api_token(session, make_account(session)))
    session.commit()
    r = client.post(
        "/api/v1/billing/checkout",
        json={"tier_id": str(shop.monthly.id), "card_number": CARD_SUCCESS, "coupon": "API20"},
        headers=other,
    )
    assert r.status_code == 422 and r.json()["error"] == "coupon_inactive"
    assert r.json()["field"] == "coupon"


def test_checkout_page_applies_a_coupon_and_explains_a_bad_one(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    make_coupon(session, shop, "PAGE10", percent_off="10")
    session.commit()
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/checkout/{shop.one_time.id}", params={"coupon": "page10"})
    assert page.status_code == 200
    assert "Discount (PAGE10)" in page.text and "$89.10" in page.text
    assert 'name="coupon" value="PAGE10"' in page.text
    bad = client.get(f"/checkout/{shop.one_time.id}", params={"coupon": "wrong"})
    assert bad.status_code == 422 and "There is no coupon WRONG for this product" in bad.text
    r = client.post(
        f"/checkout/{shop.one_time.id}",
        data={"card_number": CARD_SUCCESS, "coupon": "PAGE10", "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    order = session.scalar(select(Order).where(Order.account_id == shop.buyer.id))
    assert order is not None and order.total_minor == 8910 and order.coupon_code == "PAGE10"


def test_publisher_coupon_pages(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    session.commit()
    client.headers.update(HTML)
    login(client, shop.publisher.username)
    base = f"/publish/{shop.org.slug}/-/coupons"
    page = client.get(base)
    assert page.status_code == 200 and "No coupons yet." in page.text
    token = csrf_of(page.text)
    form = {
        "csrf_token": token,
        "code": "web5",
        "product": shop.product.repository,
        "kind": "amount",
        "value": "5",
        "duration": "repeating",
        "months": "",
    }
    bad = client.post(base, data=form)
    assert bad.status_code == 422 and "A repeating coupon needs a number of months" in bad.text
    assert 'value="web5"' in bad.text  # the form keeps what was typed
    r = client.post(base, data={**form, "months": "6"}, follow_redirects=True)
    assert r.status_code == 200 and "Coupon WEB5 made: $5.00 off for 6 months." in r.text
    coupon = session.scalar(select(Coupon).where(Coupon.code == "WEB5"))
    assert coupon is not None and coupon.amount_off_minor == 500
    r = client.post(
        f"{base}/{coupon.id}/deactivate", data={"csrf_token": token}, follow_redirects=True
    )
    assert r.status_code == 200 and "Coupon WEB5 deactivated." in r.text
    session.refresh(coupon)
    assert not coupon.active


def test_coupon_form_errors_stand_beside_their_inputs(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    session.commit()
    client.headers.update(HTML)
    login(client, shop.publisher.username)
    base = f"/publish/{shop.org.slug}/-/coupons"
    token = csrf_of(client.get(base).text)
    good = {
        "csrf_token": token,
        "code": "SPRING",
        "product": shop.product.repository,
        "kind": "percent",
        "value": "10",
        "duration": "once",
        # As a browser sends the form: the inputs left empty too.
        "tier": "",
        "months": "",
        "max_redemptions": "",
        "expires": "",
    }
    cases = [
        ({"code": "x"}, "code", "3 to 40 letters"),
        ({"value": "lots"}, "value", "not a number"),
        ({"value": ""}, "value", "either a percent off or an amount off"),
        ({"kind": "both"}, "kind", "Choose percent or amount off"),
        ({"product": "nope/nothing"}, "product", "has no product"),
        ({"duration": "weekly"}, "duration", "Duration must be one of"),
        ({"duration": "repeating"}, "months", "needs a number of months"),
        ({"duration": "repeating", "months": "six"}, "months", "whole number"),
        ({"max_redemptions": "many"}, "max_redemptions", "whole number"),
        ({"expires": "soon"}, "expires", "a date such as"),
    ]
    for change, field, message in cases:
        bad = client.post(base, data={**good, **change})
        assert bad.status_code == 422, (field, bad.status_code)
        error = re.search(rf'id="coupon-{field}-error">([^<]*)<', bad.text)
        assert error and message in error.group(1), (field, change)
        assert 'value="SPRING"' in bad.text or field == "code"  # the code is shown again
    assert session.scalars(select(Coupon)).all() == []
    made = client.post(base, data=good, follow_redirects=True)
    assert "Coupon SPRING made" in made.text
    taken = client.post(base, data=good)
    assert taken.status_code == 409
    assert re.search(r'id="coupon-code-error">[^<]*already has a coupon SPRING', taken.text)


def test_a_member_who_is_not_an_owner_cannot_make_a_coupon(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    from store.accounts import service as accounts

    editor = make_account(session, "couponeditor")
    accounts.add_member(session, org=shop.org, actor=shop.admin, account=editor, role="editor")
    session.commit()
    client.headers.update(HTML)
    login(client, "couponeditor")
    base = f"/publish/{shop.org.slug}/-/coupons"
    assert client.get(base).status_code == 403
    page = client.get(f"/publish/{shop.org.slug}")
    form = {"csrf_token": csrf_of(page.text), "code": "SNEAKY", "value": "10"}
    refused = client.post(base, data={**form, "product": shop.product.repository})
    assert refused.status_code == 403
    assert session.scalars(select(Coupon).where(Coupon.code == "SNEAKY")).all() == []
