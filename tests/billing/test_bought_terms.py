"""What a purchase gives is what the tier said when it was bought: a publisher editing the
tier's seats or features while a payment is under way, or during a subscription, changes new
purchases only (fulfilment, renewals, seat changes read back from the gateway and the
receipt read the terms recorded with the order and the subscription)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from store.billing import orders, receipts, subscriptions, webhooks
from store.billing.gateway import PaymentInput
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_SUCCESS
from store.catalog import service as catalog
from store.licensing.models import Entitlement
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event


def _entitlement(session: Session, entitlement_id: Any) -> Entitlement:
    found = session.get(Entitlement, entitlement_id)
    assert found is not None
    return found


def test_a_one_time_purchase_gets_the_seats_and_features_it_was_sold_with(
    session: Session, billing: Billing, shop: Shop
) -> None:
    catalog.update_tier(
        session, actor=shop.publisher, tier=shop.one_time, seats=5, features=["sso", "audit log"]
    )
    order = orders.start_checkout(
        session, billing, account=shop.buyer, tier=shop.one_time, quantity=3
    )
    session.commit()
    # While the buyer pays, the publisher cuts the tier down.
    catalog.update_tier(session, actor=shop.publisher, tier=shop.one_time, seats=1, features=[])
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    session.refresh(order)
    ent = _entitlement(session, order.entitlement_id)
    assert (ent.seats, ent.features) == (15, ["sso", "audit log"])
    receipt = receipts.build(order, tax_label="VAT", store_url="http://store.test")
    assert "(3 × 5 seats)" in receipt.lines[0].label
    # The next buyer gets the tier as it is now.
    other = orders.start_checkout(session, billing, account=shop.admin, tier=shop.one_time)
    orders.pay(session, billing, order=other, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    session.refresh(other)
    assert (_entitlement(session, other.entitlement_id).seats, other.terms) == (
        1,
        {"seats": 1, "features": []},
    )


def test_an_unlimited_tier_made_limited_during_the_payment_stays_unlimited(
    session: Session, billing: Billing, shop: Shop
) -> None:
    assert shop.one_time.seats is None
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    session.commit()
    catalog.update_tier(session, actor=shop.publisher, tier=shop.one_time, seats=2)
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    session.refresh(order)
    assert _entitlement(session, order.entitlement_id).seats is None


def test_a_subscription_keeps_its_terms_through_renewals_and_seat_changes(
    session: Session, billing: Billing, shop: Shop
) -> None:
    catalog.update_tier(session, actor=shop.publisher, tier=shop.monthly, seats=2, features=["a"])
    order = orders.start_checkout(
        session, billing, account=shop.buyer, tier=shop.monthly, quantity=3
    )
    session.commit()
    catalog.update_tier(session, actor=shop.publisher, tier=shop.monthly, seats=1, features=[])
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS))
    session.commit()
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.current_period_end is not None
    ent = _entitlement(session, sub.entitlement_id)
    assert (ent.seats, ent.features) == (6, ["a"])
    # A renewal after the edit: the same terms.
    subscriptions.expire_due(session, billing, sub.current_period_end + timedelta(minutes=1))
    session.commit()
    session.expire_all()
    assert _entitlement(session, sub.entitlement_id).seats == 6
    # Seats lowered in the gateway's dashboard: two units of the seats bought (2 each).
    sub = session.get(Subscription, order.subscription_id)
    assert sub is not None and sub.current_period_end is not None
    snapshot = {
        "id": sub.gateway_ref,
        "object": "subscription",
        "status": "active",
        "cancel_at_period_end": False,
        "metadata": {"subscription_id": str(sub.id)},
        "items": {
            "data": [
                {
                    "id": "si_1",
                    "quantity": 2,
                    "current_period_end": int(sub.current_period_end.timestamp()),
                }
            ]
        },
    }
    event = make_event("customer.subscription.updated", snapshot, created=int(time.time()) + 5)
    webhooks.process_event(session, billing, event)
    session.commit()
    session.expire_all()
    assert _entitlement(session, sub.entitlement_id).seats == 4
    renewals = session.query(Order).filter(Order.subscription_id == sub.id).count()
    assert renewals == 2
