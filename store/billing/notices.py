"""Notices about money: receipts and failed payments, queued in the transaction of the event
that causes them, one per cause (``dedupe_key``), however often the event is delivered."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing.models import Order, Subscription
from store.catalog.models import Product
from store.catalog.money import format_money
from store.config import Settings
from store.mail import outbox

log = logging.getLogger("store.mail")


def _parties(session: Session, order: Order) -> tuple[Account | None, Product | None]:
    return session.get(Account, order.account_id), session.get(Product, order.product_id)


def receipt(session: Session, settings: Settings | None, *, order: Order) -> None:
    """The receipt of a paid order (a purchase, or a subscription's invoice)."""
    if settings is None:
        log.warning("no store settings: receipt of order %s not mailed", order.id)
        return
    account, product = _parties(session, order)
    if account is None or product is None:
        return
    outbox.enqueue(
        session,
        settings=settings,
        template="receipt",
        account=account,
        dedupe_key=f"receipt:{order.id}",
        context={
            "product": product.title,
            "amount": format_money(order.total_minor, order.currency),
            "number": order.receipt_number or "",
            "url": f"{settings.public_url}/my/purchases/orders/{order.id}/receipt",
        },
    )


def payment_failed(
    session: Session, settings: Settings | None, *, subscription: Subscription, order: Order
) -> None:
    """A renewal payment failed: access continues through the grace period; update the card.
    One message per failed invoice, whatever the number of events about it."""
    if settings is None:
        log.warning("no store settings: failed payment of order %s not mailed", order.id)
        return
    account, product = _parties(session, order)
    if account is None or product is None:
        return
    outbox.enqueue(
        session,
        settings=settings,
        template="payment_failed",
        account=account,
        dedupe_key=f"payment_failed:{order.id}",
        context={
            "product": product.title,
            "amount": format_money(order.total_minor, order.currency),
            "reason": order.failure_reason,
            "url": f"{settings.public_url}/my/purchases",
        },
    )
