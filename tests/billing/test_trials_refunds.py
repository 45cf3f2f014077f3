"""One trial per person per product, trial starts and ends, publisher refunds, declined API
checkouts (402), "paid through" and the plugin install command, on the test gateway."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.billing import orders, subscriptions, trials
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription, TrialClaim
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_DECLINE, CARD_SUCCESS
from store.errors import Conflict, Forbidden
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.factories import api_token, auth, make_account, make_org, make_product, paid_tier
from tests.web.helpers import HTML, login, submit


def checkout(
    session: Session,
    billing: Billing,
    shop: Shop,
    tier: Any,
    *,
    account: Any = None,
    org: Any = None,
    card: str = CARD_SUCCESS,
) -> Order:
    order = orders.start_checkout(
        session, billing, account=account or shop.buyer, tier=tier, org=org
    )
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=card))
    session.commit()
    session.refresh(order)
    return order


def sub_of(session: Session, order: Order) -> Subscription:
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    session.refresh(sub)
    return sub


# --- one trial per person per product ----------------------------------------------------


def test_a_trial_once_even_after_it_ended_without_charge(
    session: Session, billing: Billing, shop: Shop
) -> None:
    first = checkout(session, billing, shop, shop.trial)
    sub = sub_of(session, first)
    assert first.total_minor == 0 and sub.status == "trialing" and sub.trial_end is not None
    # Canceled during the trial: it ends at the trial end without any charge.
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    session.commit()
    subscriptions.expire_due(session, billing, sub.trial_end + timedelta(minutes=1))
    session.commit()
    sub = sub_of(session, first)
    assert sub.status in ("canceled", "expired")
    charged = session.scalars(
        select(Order).where(Order.subscription_id == sub.id, Order.amount_minor > 0)
    ).all()
    assert charged == []
    # No second trial: the next subscription is charged from the first day.
    assert not trials.eligible(session, account=shop.buyer, product=shop.product)
    second = checkout(session, billing, shop, shop.trial)
    assert second.status == "paid" and second.amount_minor == 49000
    assert sub_of(session, second).status == "active"
    assert sub_of(session, second).trial_end is None


def test_a_trial_converts_at_its_end(session: Session, billing: Billing, shop: Shop) -> None:
    order = checkout(session, billing, shop, shop.trial)
    sub = sub_of(session, order)
    trial_end = sub.trial_end
    assert trial_end is not None
    counts = subscriptions.expire_due(session, billing, trial_end + timedelta(hours=1))
    session.commit()
    assert counts["renewed"] == 1
    sub = sub_of(session, order)
    assert sub.status == "active" and sub.current_period_end > trial_end  # type: ignore[operator]
    paid = session.scalars(
        select(Order).where(Order.subscription_id == sub.id).order_by(Order.amount_minor)
    ).all()
    assert [o.amount_minor for o in paid] == [0, 49000]
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at == sub.current_period_end


def test_one_trial_across_the_organizations_a_person_belongs_to(
    session: Session, billing: Billing, shop: Shop
) -> None:
    org_a = make_org(session, shop.buyer)
    org_b = make_org(session, shop.buyer)
    first = checkout(session, billing, shop, shop.trial, org=org_a)
    assert first.total_minor == 0 and sub_of(session, first).status == "trialing"
    # A second organization made by the same person gets no trial.
    second = checkout(session, billing, shop, shop.trial, org=org_b)
    assert second.amount_minor == 49000 and sub_of(session, second).status == "active"
    # Nor does another member of the first organization, for themselves.
    colleague = make_account(session)
    accounts.add_member(session, actor=shop.admin, org=org_a, account=colleague, role="viewer")
    assert not trials.eligible(session, account=colleague, product=shop.product)
    # A stranger does.
    assert trials.eligible(session, account=make_account(session), product=shop.product)


def test_two_claims_at_once_cannot_both_win(session: Session, billing: Billing, shop: Shop) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.trial)
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and order.amount_minor == 0
    # What a second process that checked eligibility at the same instant would insert.
    with pytest.raises(Conflict) as info:
        trials.claim(session, account=shop.buyer, product=shop.product, subscription=sub)
    assert info.value.code == "trial_used"
    claims = session.scalars(select(TrialClaim).where(TrialClaim.product_id == shop.product.id))
    assert len(claims.all()) == 1


def test_a_declined_trial_checkout_gives_the_trial_back(
    session: Session, billing: Billing, shop: Shop
) -> None:
    order = checkout(session, billing, shop, shop.trial, card=CARD_DECLINE)
    assert order.status == "failed"
    assert trials.eligible(session, account=shop.buyer, product=shop.product)
    again = checkout(session, billing, shop, shop.trial)
    assert again.total_minor == 0 and sub_of(session, again).status == "trialing"


def test_trial_receipt_says_when_the_first_charge_happens(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = checkout(session, billing, shop, shop.trial)
    sub = sub_of(session, order)
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/my/purchases/orders/{order.id}/receipt")
    assert page.status_code == 200
    assert "The first charge, $490.00, happens on" in page.text
    assert f"{sub.trial_end:%Y}" in page.text
    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    session.commit()
    page = client.get(f"/my/purchases/orders/{order.id}/receipt")
    assert "ends then without any charge" in page.text


def test_checkout_page_says_the_trial_was_used(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    assert "Start free trial" in client.get(f"/checkout/{shop.trial.id}").text
    checkout(session, billing, shop, shop.trial, card=CARD_SUCCESS)
    page = client.get(f"/checkout/{shop.trial.id}").text
    assert "Start free trial" not in page and "had the free trial" in page


def test_stripe_trial_converts_from_events(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    """Stripe's events for a trial that converts (localstripe has no trials): trialing,
    a $0 invoice, then the first real invoice at the trial end."""
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.trial)
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None
    sub.gateway_ref = "sub_hand_convert"
    session.commit()
    now = int(time.time())
    trial_end = now + 14 * 86400
    base = {"id": sub.gateway_ref, "object": "subscription", "metadata": {}}
    items = {"data": [{"id": "si_1", "current_period_end": trial_end}]}
    post_event(
        client,
        make_event(
            "customer.subscription.created",
            {**base, "status": "trialing", "trial_end": trial_end, "items": items},
            created=now,
        ),
    )

    def invoice(ref: str, amount: int, start: int, end: int) -> dict[str, Any]:
        return {
            "id": ref,
            "object": "invoice",
            "amount_paid": amount,
            "currency": "usd",
            "lines": {"data": [{"period": {"start": start, "end": end}}]},
            "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
        }

    # Every event carries its own instant: a wall-clock stamp taken on a slow machine could
    # be later than the update below and (rightly) make the update look stale.
    post_event(
        client, make_event("invoice.paid", invoice("in_trial", 0, now, trial_end), created=now)
    )
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "trialing"
    year_end = trial_end + 365 * 86400
    items = {"data": [{"id": "si_1", "current_period_end": year_end}]}
    post_event(
        client,
        make_event(
            "customer.subscription.updated",
            {**base, "status": "active", "trial_end": trial_end, "items": items},
            created=now + 1,
        ),
    )
    post_event(
        client,
        make_event(
            "invoice.paid", invoice("in_first", 49000, trial_end, year_end), created=now + 2
        ),
    )
    session.expire_all()
    sub = session.get(Subscription, sub.id)  # type: ignore[assignment]
    assert sub.status == "active"
    amounts = sorted(
        o.amount_minor
        for o in session.scalars(select(Order).where(Order.subscription_id == sub.id))
    )
    assert amounts == [0, 49000]
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and int(ent.ends_at.timestamp()) == year_end  # type: ignore[union-attr]


# --- publisher refunds ------------------------------------------------------------------------


def test_publisher_refunds_own_sales_within_the_window(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    one = checkout(session, billing, shop, shop.one_time)
    sub_order = checkout(session, billing, shop, shop.monthly, account=make_account(session))
    publisher = auth(api_token(session, shop.publisher))
    editor = make_account(session)
    accounts.add_member(session, actor=shop.admin, org=shop.org, account=editor, role="editor")
    stranger = auth(api_token(session, make_account(session)))
    as_editor = auth(api_token(session, editor))
    session.commit()

    url = f"/api/v1/billing/orders/{one.id}/refunds"
    assert client.post(url, json={"amount_minor": 100}, headers=stranger).status_code == 404
    assert client.post(url, json={"amount_minor": 100}, headers=as_editor).status_code == 404
    r = client.post(url, json={"amount_minor": 900}, headers=publisher)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "partially_refunded" and r.json()["refunded_minor"] == 900
    r = client.post(url, json={}, headers=publisher)
    assert r.json()["status"] == "refunded"
    session.expire_all()
    assert session.get(Entitlement, one.entitlement_id).status == "revoked"  # type: ignore[union-attr]

    # A subscription payment refunded by its publisher cancels the subscription.
    r = client.post(f"/api/v1/billing/orders/{sub_order.id}/refunds", json={}, headers=publisher)
    assert r.status_code == 200, r.text
    session.expire_all()
    sub = session.get(Subscription, sub_order.subscription_id)
    assert sub is not None and sub.status == "canceled" and sub.end_reason == "refunded"


def test_publisher_refund_window(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = checkout(session, billing, shop, shop.one_time)
    order.paid_at = order.paid_at - timedelta(days=31)  # type: ignore[operator]
    session.commit()
    assert billing.settings.publisher_refund_days == 30
    with pytest.raises(Forbidden) as info:
        orders.refund(session, billing, actor=shop.publisher, order=order)
    assert info.value.code == "refund_window_over"
    publisher = auth(api_token(session, shop.publisher))
    session.commit()
    r = client.post(f"/api/v1/billing/orders/{order.id}/refunds", json={}, headers=publisher)
    assert r.status_code == 403 and r.json()["error"] == "refund_window_over"
    # Administrators have no window.
    orders.refund(session, billing, actor=shop.admin, order=order)
    assert order.status == "refunded"
    # The operator may take refunds away from publishers altogether.
    fresh_order = checkout(session, billing, shop, shop.monthly)
    billing.settings.publisher_refund_days = 0
    with pytest.raises(Forbidden):
        orders.refund(session, billing, actor=shop.publisher, order=fresh_order)


def test_publisher_refund_page(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = checkout(session, billing, shop, shop.one_time)
    client.headers.update(HTML)
    login(client, shop.publisher.username)
    page = f"/publish/{shop.org.slug}/-/orders"
    listing = client.get(page)
    assert listing.status_code == 200 and order.receipt_number in listing.text  # type: ignore[operator]
    r = submit(
        client, page, f"{page}/{order.id}/refund", {"amount": "10.00"}, follow_redirects=True
    )
    assert r.status_code == 200 and "Refund recorded" in r.text
    session.expire_all()
    assert session.get(Order, order.id).refunded_minor == 1000  # type: ignore[union-attr]
    r = submit(client, page, f"{page}/{order.id}/refund", {"amount": "500"}, follow_redirects=True)
    assert "between 1 and 8900" in r.text
    # The buyer is not an owner: no such page for them.
    client.post("/logout", data={})


# --- declined API checkouts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "code", "decline_code"),
    [
        (CARD_DECLINE, "card_declined", "generic_decline"),
        ("4111111111111111", "incorrect_number", None),
    ],
)
def test_declined_api_checkout_is_402(
    client: TestClient,
    session: Session,
    billing: Billing,
    shop: Shop,
    card: str,
    code: str,
    decline_code: str | None,
) -> None:
    buyer = auth(api_token(session, shop.buyer))
    session.commit()
    for tier in (shop.one_time, shop.monthly):
        r = client.post(
            "/api/v1/billing/checkout",
            json={"tier_id": str(tier.id), "card_number": card},
            headers=buyer,
        )
        assert r.status_code == 402, r.text
        body = r.json()
        assert body["error"] == code and body["decline_code"] == decline_code
        assert body["detail"] and body["order"]["status"] == "failed"
        session.expire_all()
        stored = session.get(Order, uuid.UUID(body["order"]["id"]))
        assert stored is not None and stored.status == "failed" and stored.entitlement_id is None


# --- pages ------------------------------------------------------------------------------------


def test_paid_through_is_empty_when_the_first_payment_failed(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = checkout(session, billing, shop, shop.monthly, card=CARD_DECLINE)
    sub = sub_of(session, order)
    assert sub.status == "canceled" and sub.entitlement_id is None
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get("/my/purchases").text
    row = page[page.index(shop.product.title) : page.index("</tr>", page.index(shop.product.title))]
    assert "—" in row and "20" not in row.split("Canceled")[-1]


def test_plugins_say_docker_plugin_install(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    from store.db import utcnow
    from store.registry import hub

    plugin = make_product(
        session, shop.org, shop.publisher, kind="plugin", tiers=[paid_tier("pro", 900, "one_time")]
    )
    for repository in (plugin.repository, shop.product.repository):
        hub.record_push(
            session,
            name=repository,
            digest="sha256:" + "a" * 64,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=10,
            tag="1.0",
            actor=shop.publisher.username,
            at=utcnow(),
        )
    session.commit()
    client.headers.update(HTML)
    page = client.get(f"/products/{plugin.repository}").text
    assert f"/{plugin.repository}:1.0" in page
    assert "docker plugin install" in page and "docker pull" not in page
    image = client.get(f"/products/{shop.product.repository}").text
    assert "docker pull" in image and "docker plugin install" not in image
    login(client, shop.publisher.username)
    edit = client.get(f"/publish/{plugin.repository}").text
    assert "docker plugin push" in edit and "docker plugin install" in edit
