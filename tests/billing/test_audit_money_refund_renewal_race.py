"""A renewal paid at the instant an earlier payment of the subscription is fully refunded
(PostgreSQL, separate connections; the refund's transaction is held open while the renewal
runs): the refund's revocation stands, the renewal never reinstates the access."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store.billing import orders, subscriptions
from store.billing.gateway import PaymentInput
from store.billing.models import Subscription
from store.billing.runtime import Billing, build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.config import Settings
from store.db import utcnow
from store.licensing import entitlements
from store.licensing.models import Entitlement
from tests.billing.helpers import billing_settings
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import scratch_sessions


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    with scratch_sessions("refund_renewal") as sessions:
        yield sessions


@pytest.fixture
def billing(factory: sessionmaker[Session], tmp_path: object) -> Billing:
    settings = Settings(
        data_dir=tmp_path / "data",  # type: ignore[operator]
        database_url=str(factory.kw["bind"].url),
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )
    return build_billing(billing_settings(), settings)


def test_a_renewal_paid_while_the_subscription_is_refunded_does_not_reinstate_it(
    factory: sessionmaker[Session], billing: Billing
) -> None:
    with factory() as session:
        owner = make_account(session)
        product = make_product(
            session, make_org(session, owner), owner, tiers=[paid_tier("pro", 4900, "month")]
        )
        order = orders.start_checkout(
            session, billing, account=make_account(session), tier=tier_of(product, "pro")
        )
        orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
        sub = session.get(Subscription, order.subscription_id)
        assert sub is not None and sub.entitlement_id is not None
        assert sub.current_period_end is not None
        ent = session.get(Entitlement, sub.entitlement_id)
        assert ent is not None
        # past due, its grace over: suspended until a payment comes
        sub.status = "past_due"
        entitlements.set_status(session, entitlement=ent, status="suspended", signer=None)
        session.commit()
        sub_id, ent_id = sub.id, ent.id
        end1 = int(sub.current_period_end.timestamp())
    renewal = {
        "id": "in_renewal_race",
        "object": "invoice",
        "amount_paid": 4900,
        "amount_due": 4900,
        "currency": "usd",
        "payment_intent": "pi_renewal_race",
        "lines": {"data": [{"period": {"start": end1, "end": end1 + 30 * 86400}}]},
    }
    done = threading.Event()
    errors: list[BaseException] = []

    def renew() -> None:
        with factory() as session:
            try:
                found = subscriptions.find_locked(session, "test", None, str(sub_id))
                assert found is not None
                session.get(Entitlement, ent_id)  # read before the refund commits
                subscriptions.invoice_paid(session, billing, found, renewal, at=utcnow())
                session.commit()
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

    with factory() as refunding:
        ent = refunding.get(Entitlement, ent_id)
        assert ent is not None
        entitlements.revoke(refunding, entitlement=ent, actor=None, reason="Order refunded")
        thread = threading.Thread(target=renew)
        thread.start()
        with factory() as probe:
            for _ in range(400):
                waiting = probe.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                probe.rollback()
                if waiting or done.is_set():
                    break
                time.sleep(0.025)
        refunding.commit()
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    with factory() as session:
        ent = session.get(Entitlement, ent_id)
        assert ent is not None and ent.status == "revoked"
