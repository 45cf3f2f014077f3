"""Account deletion and billing: refused while a subscription renews; afterwards the orders
stay for accounting with an anonymous buyer, and the receipt names nobody."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import receipts, subscriptions
from store.billing.models import Order
from store.billing.runtime import Billing
from store.config import Settings
from store.errors import Conflict
from store.privacy import lifecycle
from tests.billing.conftest import Shop
from tests.billing.test_webhooks import active_subscription, fresh
from tests.factories import PASSWORD


def test_a_renewing_subscription_holds_deletion_back(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    sub = active_subscription(session, billing, shop)
    with pytest.raises(Conflict) as refused:
        lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    assert refused.value.code == "account_not_deletable"
    assert "renews: cancel it first" in refused.value.detail
    assert fresh(session, shop.buyer).deleted_at is None

    subscriptions.set_cancel_at_period_end(session, billing, sub=sub, cancel=True)
    assert lifecycle.deletion_blockers(session, shop.buyer) == []
    lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    session.commit()
    [order] = session.scalars(select(Order).where(Order.account_id == shop.buyer.id)).all()
    assert order.status == "paid" and order.receipt_number
    document = receipts.build(order, tax_label="Tax", store_url=settings.public_url)
    assert not any("@example.com" in line for line in document.buyer)
    assert "Deleted account" in " ".join(document.buyer)
