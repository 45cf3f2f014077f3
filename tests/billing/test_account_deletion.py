"""Account deletion and billing: refused while a subscription renews; afterwards the orders
stay for accounting with an anonymous buyer, and the receipt names nobody. Open checkouts
end; a payment completing after the deletion is refunded in full and fulfils nothing (held
for an administrator if the refund is refused); a deleted account starts no checkout."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.audit.models import AuditEvent
from store.billing import deleted_buyers, orders, receipts, subscriptions
from store.billing.gateway import GatewayError
from store.billing.models import Order, Refund
from store.billing.runtime import Billing
from store.config import Settings
from store.db import utcnow
from store.errors import Conflict, Forbidden
from store.licensing.models import Entitlement
from store.mail.models import OutboxMessage
from store.privacy import lifecycle
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.billing.test_webhooks import (
    active_subscription,
    fresh,
    intent,
    invoice,
    pending_order,
)
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


def test_a_checkout_paid_after_deletion_is_refunded_and_never_fulfilled(
    client: TestClient, session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    order = pending_order(session, billing, shop)
    lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    session.commit()
    ended = fresh(session, order)
    assert ended.status == "failed" and ended.failure_reason == deleted_buyers.ENDED

    # the bank confirms the payment anyway, and the event comes twice
    event = make_event("payment_intent.succeeded", intent(order))
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200
    late = fresh(session, order)
    assert late.status == "refunded" and late.refunded_minor == late.total_minor == 9900
    assert late.paid_at is not None and late.entitlement_id is None
    assert session.scalars(select(Refund).where(Refund.order_id == order.id)).all()
    assert not session.scalars(
        select(Entitlement).where(Entitlement.account_id == shop.buyer.id)
    ).all()
    templates = set(session.scalars(select(OutboxMessage.template)))
    assert "new_sale" not in templates and "receipt" not in templates
    refunds = session.scalars(select(AuditEvent).where(AuditEvent.action == "order.refund")).all()
    assert [e.details["reason"] for e in refunds] == ["paid after the account was deleted"]


def test_a_deleted_account_starts_no_checkout(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    with pytest.raises(Forbidden) as refused:
        orders.start_checkout(session, billing, account=shop.buyer, tier=shop.one_time)
    assert refused.value.code == "account_inactive"


def test_a_refused_automatic_refund_holds_the_order_for_review(
    client: TestClient,
    session: Session,
    settings: Settings,
    billing: Billing,
    shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = pending_order(session, billing, shop)
    lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    session.commit()

    def refuse(*args: object, **kwargs: object) -> int:
        raise GatewayError("charge already disputed")

    monkeypatch.setattr(billing.gateway, "refund", refuse)
    assert (
        post_event(client, make_event("payment_intent.succeeded", intent(order))).status_code == 200
    )
    held = fresh(session, order)
    assert held.status == "review" and held.paid_at is None and held.entitlement_id is None
    assert "automatic refund failed: charge already disputed" in held.failure_reason


def test_a_subscription_checkout_paid_after_deletion_ends_and_is_refunded(
    client: TestClient, session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    order = orders.start_checkout(session, billing, account=shop.buyer, tier=shop.monthly)
    session.commit()
    sub = fresh(session, order).subscription
    assert sub is not None and sub.status == "incomplete"
    sub.gateway_ref = "sub_open_checkout"  # made at the gateway, its first invoice unpaid
    session.commit()
    lifecycle.delete_account(session, settings=settings, account=shop.buyer, password=PASSWORD)
    session.commit()

    start = int(utcnow().timestamp())
    paid: dict[str, Any] = invoice(sub, "in_after_deletion", start, start + 30 * 86400)
    event = make_event("invoice.paid", paid)
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200
    late = fresh(session, order)
    assert late.status == "refunded" and late.refunded_minor == late.total_minor == 4900
    assert late.entitlement_id is None and late.gateway_ref == "in_after_deletion"
    assert fresh(session, sub).status == "canceled"
    assert not session.scalars(
        select(Entitlement).where(Entitlement.account_id == shop.buyer.id)
    ).all()
    templates = set(session.scalars(select(OutboxMessage.template)))
    assert not templates & {"new_sale", "receipt", "subscription_renewed", "license_issued"}
