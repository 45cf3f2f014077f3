"""Two changes of one subscription's plan at the same instant (two tabs, two processes'
connections), on SQLite and PostgreSQL: the plan changes once and is charged once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account
from store.billing import orders, plan_changes
from store.billing.gateway import PaymentInput
from store.billing.models import Order, PlanChange, Subscription
from store.billing.runtime import build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.catalog.models import Tier
from store.db import session_scope, utcnow
from tests.billing.helpers import billing_settings
from tests.billing.test_coupon_races import _race, factory  # noqa: F401  (the fixture)
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of

ROUNDS = 5


def _change(sub_id: object, account_id: object, tier_id: object, key: str | None) -> Callable:
    billing = build_billing(billing_settings())

    def attempt(session: Session) -> None:
        sub = session.get(Subscription, sub_id)
        account = session.get(Account, account_id)
        tier = session.get(Tier, tier_id)
        assert sub is not None and account is not None and tier is not None
        change = plan_changes.change_plan(
            session, billing, sub=sub, tier=tier, actor=account, key=key
        )
        assert change.status == "applied"

    return attempt


def test_two_changes_at_once_change_once(factory: sessionmaker[Session]) -> None:  # noqa: F811
    billing = build_billing(billing_settings())
    subs = []
    with session_scope(factory) as session:
        publisher = make_account(session, "planpub")
        org = make_org(session, publisher)
        product = make_product(
            session,
            org,
            publisher,
            tiers=[paid_tier("basic", 1000, "month"), paid_tier("pro", 3000, "month")],
        )
        basic, pro = tier_of(product, "basic"), tier_of(product, "pro")
        for _ in range(ROUNDS):
            buyer = make_account(session)
            order = orders.start_checkout(session, billing, account=buyer, tier=basic)
            orders.pay(
                session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS)
            )
            sub = session.get(Subscription, order.subscription_id)
            assert sub is not None and sub.status == "active"
            sub.current_period_start = utcnow() - timedelta(days=10)
            subs.append((sub.id, buyer.id))
        pro_id = pro.id
    for i, (sub_id, buyer_id) in enumerate(subs):
        # Two tabs (different keys) on odd rounds; a double click (one key) on even ones.
        keys = (
            ("tab-a-" + str(i) * 4, "tab-b-" + str(i) * 4)
            if i % 2
            else ("click-" + str(i) * 4,) * 2
        )
        results = _race(factory, [_change(sub_id, buyer_id, pro_id, k) for k in keys])
        if i % 2:
            assert sorted(results) == ["ok", "same_plan"], results
        else:
            assert results == ["ok", "ok"], results  # the second answers the first change
    with session_scope(factory) as session:
        for sub_id, _ in subs:
            count = session.scalar(
                select(func.count())
                .select_from(PlanChange)
                .where(PlanChange.subscription_id == sub_id)
            )
            charges = session.scalar(
                select(func.count())
                .select_from(Order)
                .where(Order.subscription_id == sub_id, Order.paid_at.is_not(None))
            )
            assert (count, charges) == (1, 2)  # the checkout and one change
            sub = session.get(Subscription, sub_id)
            assert sub is not None and sub.tier_id == pro_id
