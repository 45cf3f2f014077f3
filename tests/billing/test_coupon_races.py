"""Under concurrency, on SQLite and PostgreSQL (separate connections at the same instant):
checkouts never pass a coupon's limit nor its once-per-customer rule, and paying a past-due
invoice twice at once charges it once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import migrate
from store.accounts.models import Account, Organization
from store.billing import coupons, orders
from store.billing.models import Coupon, CouponRedemption, Order
from store.billing.runtime import build_billing
from store.catalog.models import Tier
from store.db import make_engine, make_sessionmaker, session_scope
from store.errors import StoreError
from tests.billing.helpers import billing_settings
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import PG_URL, scratch_database

ROUNDS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield make_sessionmaker(engine)
        engine.dispose()
        return
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    with scratch_database("coupon_races", migrated=True) as url:
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


def _race(factory: sessionmaker[Session], attempts: list[Callable[[Session], None]]) -> list[str]:
    """Run each attempt in its own thread and session at the same instant; each result is
    ``ok`` or the error's code."""
    barrier = threading.Barrier(len(attempts))
    results: list[str] = [""] * len(attempts)

    def run(i: int) -> None:
        session = factory()
        try:
            barrier.wait(timeout=30)
            attempts[i](session)
            session.commit()
            results[i] = "ok"
        except StoreError as exc:
            session.rollback()
            results[i] = exc.code or type(exc).__name__
        except Exception as exc:  # reported in the assertion
            session.rollback()
            results[i] = f"crash: {exc!r}"
        finally:
            session.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _checkout(account_id: object, tier_id: object, code: str, org_id: object = None) -> Callable:
    billing = build_billing(billing_settings())

    def attempt(session: Session) -> None:
        account = session.get(Account, account_id)
        tier = session.get(Tier, tier_id)
        org = session.get(Organization, org_id) if org_id else None
        assert account is not None and tier is not None
        orders.start_checkout(
            session, billing, account=account, tier=tier, org=org, coupon_code=code
        )

    return attempt


def test_the_last_redemption_goes_to_exactly_one_checkout(
    factory: sessionmaker[Session],
) -> None:
    with session_scope(factory) as session:
        publisher = make_account(session, "couponpub")
        org = make_org(session, publisher)
        product = make_product(
            session, org, publisher, tiers=[paid_tier("lifetime", 9900, "one_time")]
        )
        tier_id = tier_of(product, "lifetime").id
        spec = coupons.CouponSpec
        for i in range(ROUNDS):
            coupons.create(
                session,
                actor=publisher,
                org=org,
                spec=spec(
                    code=f"LAST{i}",
                    product=product.repository,
                    percent_off="30",
                    max_redemptions=1,
                ),
            )
        buyers = [(make_account(session).id, make_account(session).id) for _ in range(ROUNDS)]
    for i, (a, b) in enumerate(buyers):
        results = _race(
            factory, [_checkout(a, tier_id, f"LAST{i}"), _checkout(b, tier_id, f"LAST{i}")]
        )
        assert sorted(results) == ["coupon_used_up", "ok"], results
    with session_scope(factory) as session:
        counts = session.scalars(select(Coupon.times_redeemed)).all()
        assert counts == [1] * ROUNDS
        live = session.scalar(
            select(func.count())
            .select_from(CouponRedemption)
            .where(CouponRedemption.status == "held")
        )
        assert live == ROUNDS
        discounted = session.scalar(
            select(func.count()).select_from(Order).where(Order.discount_minor == 2970)
        )
        assert (
            discounted == ROUNDS
            and session.scalar(select(func.count()).select_from(Order)) == ROUNDS
        )


def test_once_per_customer_holds_across_holders(factory: sessionmaker[Session]) -> None:
    """One person buying for themselves and for their organization at the same instant with
    a once-per-customer coupon: one of the two gets it."""
    with session_scope(factory) as session:
        publisher = make_account(session, "couponpub2")
        org = make_org(session, publisher)
        product = make_product(
            session, org, publisher, tiers=[paid_tier("lifetime", 5000, "one_time")]
        )
        tier_id = tier_of(product, "lifetime").id
        pairs = []
        for i in range(ROUNDS):
            coupons.create(
                session,
                actor=publisher,
                org=org,
                spec=coupons.CouponSpec(
                    code=f"MINE{i}",
                    product=product.repository,
                    amount_off="10",
                    once_per_customer=True,
                ),
            )
            buyer = make_account(session)
            team = make_org(session, buyer)
            pairs.append((buyer.id, team.id))
    for i, (buyer_id, team_id) in enumerate(pairs):
        results = _race(
            factory,
            [
                _checkout(buyer_id, tier_id, f"MINE{i}"),
                _checkout(buyer_id, tier_id, f"MINE{i}", org_id=team_id),
            ],
        )
        assert sorted(results) == ["coupon_already_used", "ok"], results
    with session_scope(factory) as session:
        assert session.scalars(select(Coupon.times_redeemed)).all() == [1] * ROUNDS


def test_pay_now_twice_at_once_charges_once(factory: sessionmaker[Session]) -> None:
    """Two "pay now" of one past-due subscription at the same instant (a double click, two
    tabs): one pays the failed invoice, the other finds nothing due."""
    from store.billing import subscriptions, webhooks
    from store.billing.gateway import PaymentInput
    from store.billing.models import Subscription
    from store.billing.test_gateway import CARD_SUCCESS
    from tests.billing.helpers import make_event

    billing = build_billing(billing_settings())
    with session_scope(factory) as session:
        publisher = make_account(session, "paynowpub")
        org = make_org(session, publisher)
        product = make_product(session, org, publisher, tiers=[paid_tier("pro", 4900, "month")])
        order = orders.start_checkout(
            session, billing, account=make_account(session), tier=tier_of(product, "pro")
        )
        orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
        sub_id = order.subscription_id
        sub = session.get(Subscription, sub_id)
        assert sub is not None
        invoice = {
            "id": "in_test_race",
            "object": "invoice",
            "amount_due": 4900,
            "tax": 0,
            "currency": "usd",
            "parent": {"subscription_details": {"subscription": sub.gateway_ref}},
        }
        webhooks.process_event(session, billing, make_event("invoice.payment_failed", invoice))

    def attempt(session: Session) -> None:
        sub = session.get(Subscription, sub_id)
        assert sub is not None
        subscriptions.pay_now(
            session, billing, sub=sub, payment=PaymentInput(card_number=CARD_SUCCESS)
        )

    assert sorted(_race(factory, [attempt, attempt])) == ["nothing_due", "ok"]
    with session_scope(factory) as session:
        sub = session.get(Subscription, sub_id)
        assert sub is not None and sub.status == "active" and sub.paid_charges == 2
        paid = session.scalar(
            select(func.count())
            .select_from(Order)
            .where(Order.subscription_id == sub_id, Order.paid_at.is_not(None))
        )
        assert paid == 2
