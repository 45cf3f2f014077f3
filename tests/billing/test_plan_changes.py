"""Plan changes on the test gateway: prorated upgrade/downgrade/interval change, the
entitlement following only a paid change, idempotency, refusals, receipts, sales, mail."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing import orders, plan_changes, receipts, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Order, PlanChange, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_AUTHENTICATE, CARD_DECLINE, CARD_SUCCESS
from store.catalog.models import Product, Tier
from store.db import utcnow
from store.errors import Conflict, ValidationFailed
from store.licensing.models import Entitlement
from store.mail.models import OutboxMessage
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event
from tests.factories import api_token, auth, make_account, make_product, paid_tier, tier_of
from tests.web.helpers import HTML, csrf_of, login


@pytest.fixture
def plans(session: Session, shop: Shop) -> Product:
    """A product with a ladder of plans: basic/pro monthly (pro has 5 seats), pro yearly."""
    product = make_product(
        session,
        shop.org,
        shop.publisher,
        tiers=[
            {"slug": "free", "billing": "free"},
            paid_tier("basic", 1000, "month", features=["pull"]),
            paid_tier("pro", 3000, "month", seats=5, features=["pull", "support"]),
            paid_tier("pro-year", 30000, "year", seats=5, features=["pull", "support"]),
            paid_tier("lifetime", 50000, "one_time"),
        ],
    )
    session.commit()
    return product


def subscribe(session: Session, billing: Billing, account: Any, tier: Tier) -> Subscription:
    order = orders.start_checkout(session, billing, account=account, tier=tier)
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.status == "active"
    return sub


def halfway(session: Session, sub: Subscription) -> None:
    """Move the current period so that half of it is used (the test gateway has no clock)."""
    now = utcnow()
    sub.current_period_start = now - timedelta(days=15)
    sub.current_period_end = now + timedelta(days=15)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None
    ent.ends_at = sub.current_period_end
    session.commit()


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_upgrade_is_charged_prorated_and_the_entitlement_follows(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    preview = plan_changes.proration(session, billing, sub, pro)
    assert 990 <= preview.due_now_minor <= 1010  # half of (3000 - 1000), to the second
    change = plan_changes.change_plan(
        session, billing, sub=sub, tier=pro, actor=shop.buyer, key="click-0001"
    )
    session.commit()
    assert change.status == "applied" and change.due_minor == preview.due_now_minor
    session.refresh(sub)
    assert sub.tier_id == pro.id and sub.amount_minor == 3000 and sub.interval == "month"
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.tier_id == pro.id
    assert ent.seats == 5 and ent.features == ["pull", "support"]
    assert ent.ends_at == sub.current_period_end  # same period
    order = change.order
    assert order is not None and order.status == "paid" and order.receipt_number
    assert order.total_minor == change.due_minor and order.tier_id == pro.id
    assert order.period_end == sub.current_period_end
    receipt = receipts.build(order, tax_label="Tax", store_url="http://127.0.0.1")
    assert receipt.service.endswith(f"{sub.current_period_end:%Y-%m-%d}")
    assert any("Credit for unused time on Basic" in line.label for line in receipt.lines)
    # A double click (same key) changes once and charges once.
    again = plan_changes.change_plan(
        session, billing, sub=sub, tier=pro, actor=shop.buyer, key="click-0001"
    )
    assert again.id == change.id
    assert _count(session, PlanChange, PlanChange.subscription_id == sub.id) == 1
    assert _count(session, Order, Order.subscription_id == sub.id) == 2  # checkout + change
    # The mail notice, once.
    mails = session.scalars(
        select(OutboxMessage).where(OutboxMessage.template == "plan_changed")
    ).all()
    assert len(mails) == 1
    # No renewal notice for the change's payment (it is not a renewal).
    assert not session.scalars(
        select(OutboxMessage).where(OutboxMessage.template == "subscription_renewed")
    ).all()


def test_a_failed_charge_keeps_the_old_plan(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    for card, code in (
        (CARD_DECLINE, "card_declined"),
        (CARD_AUTHENTICATE, "authentication_required"),
    ):
        change = plan_changes.change_plan(
            session, billing, sub=sub, tier=pro, actor=shop.buyer,
            payment=PaymentInput(card_number=card),
        )  # fmt: skip
        session.commit()
        assert change.status == "failed" and change.failure_code == code
        assert change.order is not None and change.order.status == "failed"
        session.refresh(sub)
        assert sub.tier_id == basic.id and sub.amount_minor == 1000
        ent = session.get(Entitlement, sub.entitlement_id)
        assert ent is not None and ent.tier_id == basic.id and ent.seats is None
    # Afterwards the change can still be made (the failed one is not pending).
    change = plan_changes.change_plan(session, billing, sub=sub, tier=pro, actor=shop.buyer)
    assert change.status == "applied"


def test_downgrade_carries_the_credit_to_the_next_renewal(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, pro)
    halfway(session, sub)
    change = plan_changes.change_plan(session, billing, sub=sub, tier=basic, actor=shop.buyer)
    session.commit()
    assert change.status == "applied" and change.order_id is None and change.due_minor == 0
    assert 990 <= change.carried_minor <= 1010
    session.refresh(sub)
    assert sub.tier_id == basic.id and sub.credit_net_minor == change.carried_net_minor
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.tier_id == basic.id and ent.seats is None
    # The next renewal (the test gateway's clock) takes the credit off: 1000 - ~1000.
    assert sub.current_period_end is not None
    subscriptions.expire_due(session, billing, now=sub.current_period_end + timedelta(seconds=1))
    session.commit()
    session.refresh(sub)
    renewal = session.scalars(
        select(Order).where(Order.subscription_id == sub.id).order_by(Order.created_at.desc())
    ).first()
    assert renewal is not None and renewal.status == "paid"
    assert renewal.amount_minor == max(0, 1000 - change.carried_net_minor)
    assert sub.credit_net_minor == max(0, change.carried_net_minor - 1000)


def test_interval_change_starts_a_new_period(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    pro, year = tier_of(plans, "pro"), tier_of(plans, "pro-year")
    sub = subscribe(session, billing, shop.buyer, pro)
    halfway(session, sub)
    change = plan_changes.change_plan(session, billing, sub=sub, tier=year, actor=shop.buyer)
    session.commit()
    assert change.status == "applied" and change.interval_change
    assert 28490 <= change.due_minor <= 28510  # 30000 - half of 3000
    session.refresh(sub)
    assert sub.interval == "year" and sub.current_period_end == change.period_end
    assert change.period_end > utcnow() + timedelta(days=360)
    ent = session.get(Entitlement, sub.entitlement_id)
    assert ent is not None and ent.ends_at == change.period_end and ent.tier_id == year.id


def test_refusals(session: Session, billing: Billing, shop: Shop, plans: Product) -> None:
    basic = tier_of(plans, "basic")
    sub = subscribe(session, billing, shop.buyer, basic)
    cases = [
        (tier_of(plans, "basic"), "same_plan"),
        (tier_of(plans, "free"), "tier_is_free"),
        (tier_of(plans, "lifetime"), "target_not_recurring"),
        (shop.monthly, "other_product"),
    ]
    for tier, code in cases:
        with pytest.raises(ValidationFailed) as err:
            plan_changes.change_plan(session, billing, sub=sub, tier=tier, actor=shop.buyer)
        assert err.value.code == code and err.value.field == "tier"
    with pytest.raises(ValidationFailed) as bad_key:
        plan_changes.change_plan(
            session, billing, sub=sub, tier=tier_of(plans, "pro"), actor=shop.buyer, key="x y"
        )
    assert bad_key.value.code == "bad_idempotency_key"
    sub.status = "past_due"
    session.commit()
    with pytest.raises(Conflict) as due:
        plan_changes.change_plan(
            session, billing, sub=sub, tier=tier_of(plans, "pro"), actor=shop.buyer
        )
    assert due.value.code == "pay_first"


def test_a_pending_change_blocks_a_second(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    """The partial unique index: at most one pending change per subscription."""
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    common: dict[str, Any] = dict(
        subscription_id=sub.id, from_tier_id=basic.id, to_tier_id=pro.id, status="pending",
        currency="usd", credit_net_minor=0, credit_tax_minor=0, charge_net_minor=0,
        charge_tax_minor=0, due_net_minor=0, due_tax_minor=0, carried_net_minor=0,
        carried_tax_minor=0, interval_change=False, changed_at=utcnow(), period_end=utcnow(),
    )  # fmt: skip
    session.add(PlanChange(key="stuck-0001", **common))
    session.commit()
    with pytest.raises(Conflict) as err:
        plan_changes.change_plan(session, billing, sub=sub, tier=pro, actor=shop.buyer)
    assert err.value.code == "change_in_progress"


def test_sales_report_counts_the_change(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    from store.billing import sales

    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    change = plan_changes.change_plan(session, billing, sub=sub, tier=pro, actor=shop.buyer)
    session.commit()
    rows = {r.tier: r for r in sales.sales_of(session, actor=shop.publisher, org=shop.org)}
    assert rows["basic"].gross_minor == 1000 and rows["basic"].orders == 1
    assert rows["pro"].gross_minor == change.due_minor and rows["pro"].orders == 1


def test_api_and_page(
    client: TestClient, session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    api = {**auth(api_token(session, shop.buyer)), "accept": "application/json"}
    session.commit()
    base = f"/api/v1/billing/subscriptions/{sub.id}"
    r = client.get(f"{base}/plans", headers=api)
    assert r.status_code == 200
    names = [o["tier_name"] for o in r.json()]
    assert sorted(names) == ["Pro", "Pro Year"], names
    r = client.post(f"{base}/change", json={"tier_id": str(shop.monthly.id)}, headers=api)
    assert r.status_code == 422 and r.json()["error"] == "other_product"
    assert r.json().get("field") == "tier"
    r = client.post(
        f"{base}/change",
        json={"tier_id": str(pro.id), "card_number": CARD_DECLINE},
        headers=api,
    )
    assert r.status_code == 402 and r.json()["error"] == "card_declined"
    key = {"Idempotency-Key": f"api-{uuid.uuid4().hex}"}
    first = client.post(f"{base}/change", json={"tier_id": str(pro.id)}, headers={**api, **key})
    second = client.post(f"{base}/change", json={"tier_id": str(pro.id)}, headers={**api, **key})
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["id"] == second.json()["id"] and first.json()["status"] == "applied"
    r = client.post(f"{base}/change", json={"tier_id": str(pro.id)}, headers=api)
    assert r.status_code == 422 and r.json()["error"] == "same_plan"
    # The page: options with the prorated amount, confirm, and the change listed.
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/my/purchases/subscriptions/{sub.id}")
    assert page.status_code == 200 and "Change plan" in page.text
    assert "Basic" in page.text
    # A change that is not offered (the current plan) is said on the subscription's page.
    session.refresh(sub)
    same = client.get(
        f"/my/purchases/subscriptions/{sub.id}/change?tier={sub.tier_id}", follow_redirects=False
    )
    assert same.status_code == 303
    assert same.headers["location"] == f"/my/purchases/subscriptions/{sub.id}"
    assert "This is your plan already" in client.get(same.headers["location"]).text
    preview = client.get(f"/my/purchases/subscriptions/{sub.id}/change?tier={basic.id}")
    assert preview.status_code == 200
    assert "Credit for unused time" in preview.text and "Confirm" in preview.text
    form = {"csrf_token": csrf_of(preview.text), "tier": str(basic.id)}
    form["key"] = preview.text.split('name="key" value="', 1)[1].split('"', 1)[0]
    r = client.post(
        f"/my/purchases/subscriptions/{sub.id}/change", data=form, follow_redirects=True
    )
    assert r.status_code == 200 and "Your plan is now Basic" in r.text
    r2 = client.post(
        f"/my/purchases/subscriptions/{sub.id}/change", data=form, follow_redirects=True
    )
    assert r2.status_code == 200
    session.expire_all()
    assert _count(session, PlanChange, PlanChange.subscription_id == sub.id) == 3  # 1 failed


def test_hand_made_event_of_a_replaced_gateway_subscription_is_ignored(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    from store.billing import webhooks

    sub = subscribe(session, billing, shop.buyer, tier_of(plans, "basic"))
    halfway(session, sub)
    change = plan_changes.change_plan(
        session, billing, sub=sub, tier=tier_of(plans, "pro"), actor=shop.buyer
    )
    change.replaced_gateway_ref = "sub_test_replaced"  # as a gateway starting a new one does
    session.commit()
    obj = {"id": "sub_test_replaced", "object": "subscription", "status": "canceled",
           "metadata": {"subscription_id": str(sub.id)}}  # fmt: skip
    webhooks.process_event(
        session, billing, make_event("customer.subscription.deleted", obj), source="test-gateway"
    )
    session.commit()
    session.refresh(sub)
    assert sub.status == "active"


def test_coupons_follow_the_quote_rules(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    from store.billing import coupons

    def make(code: str, tier: str | None) -> None:
        spec = coupons.CouponSpec(
            code=code, product=plans.repository, tier=tier, percent_off="50", duration="forever"
        )
        coupons.create(session, actor=shop.publisher, org=shop.org, spec=spec)

    make("BASICHALF", "basic")
    make("ALLHALF", None)
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    subs = []
    for code in ("BASICHALF", "ALLHALF"):
        buyer = make_account(session)
        order = orders.start_checkout(session, billing, account=buyer, tier=basic, coupon_code=code)
        session.commit()
        orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
        session.commit()
        sub = session.get(Subscription, order.subscription_id)
        assert sub is not None and sub.amount_minor == 500
        halfway(session, sub)
        subs.append((sub, buyer))
    (only_basic, a), (everywhere, b) = subs
    # A coupon of the old tier: the credit is half of what was paid (500), the new plan is
    # charged in full, and later charges are full price.
    one = plan_changes.change_plan(session, billing, sub=only_basic, tier=pro, actor=a)
    assert 245 <= one.credit_net_minor <= 255 and 1490 <= one.charge_net_minor <= 1510
    assert only_basic.amount_minor == 3000 and only_basic.discount_minor == 0
    # A coupon of the product: the new plan is discounted as well.
    two = plan_changes.change_plan(session, billing, sub=everywhere, tier=pro, actor=b)
    assert 745 <= two.charge_net_minor <= 755
    assert everywhere.amount_minor == 1500 and everywhere.discount_minor == 1500


def test_a_change_left_pending_is_completed_by_reconcile(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    """The process stopped between recording the change and completing it: the pending
    change blocks others, and ``store billing reconcile`` completes it once."""
    from store.billing import reconcile

    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    change = plan_changes.start(
        session, billing, sub=sub, tier=pro, actor=shop.buyer, key="crash-0001"
    )
    session.commit()
    assert change.status == "pending" and change.order is not None
    with pytest.raises(Conflict) as busy:
        plan_changes.start(session, billing, sub=sub, tier=pro, actor=shop.buyer, key="other-0001")
    assert busy.value.code == "change_in_progress"
    session.rollback()
    # The same key answers the pending change.
    again = plan_changes.start(
        session, billing, sub=sub, tier=pro, actor=shop.buyer, key="crash-0001"
    )
    assert again.id == change.id
    # Not stale yet: reconcile leaves it to the process that is completing it.
    report = reconcile.reconcile_all(session, billing)
    assert not [c for c in report.changed if "plan_change" in c]
    change.created_at = utcnow() - timedelta(minutes=11)
    session.commit()
    report = reconcile.reconcile_all(session, billing)
    session.commit()
    assert {"plan_change": str(change.id), "from": "pending", "to": "applied"} in report.changed
    session.refresh(sub)
    assert sub.tier_id == pro.id and change.order is not None and change.order.status == "paid"
    # Completing again changes and charges nothing more.
    assert plan_changes.complete(session, billing, change=change).status == "applied"
    assert _count(session, Order, Order.subscription_id == sub.id, Order.paid_at.is_not(None)) == 2


def test_a_pending_change_fails_when_the_subscription_moved_on(
    session: Session, billing: Billing, shop: Shop, plans: Product
) -> None:
    basic, pro = tier_of(plans, "basic"), tier_of(plans, "pro")
    sub = subscribe(session, billing, shop.buyer, basic)
    halfway(session, sub)
    change = plan_changes.start(session, billing, sub=sub, tier=pro, actor=shop.buyer)
    session.commit()
    sub.status = "past_due"  # a renewal failed meanwhile
    session.commit()
    done = plan_changes.complete(session, billing, change=change)
    assert done.status == "failed" and done.failure_code == "subscription_changed"
    assert done.order is not None and done.order.status == "failed"
    session.refresh(sub)
    assert sub.tier_id == basic.id
