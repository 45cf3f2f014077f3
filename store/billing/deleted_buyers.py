"""Payments of accounts that no longer exist: refunded, never fulfilled.

A deleted account keeps its row, anonymised, for accounting; nothing may be sold to it.
So deleting an account ends its open checkouts (``end_checkouts``: pending one-time orders
fail, the money was not taken), and a payment that completes anyway (a bank's late
confirmation, a payment page left open) is recorded and refunded in full at the gateway at
once (``refund_late_payment``): no entitlement, no license, no receipt or sale notice, an
audit event. A subscription's invoice paid after the deletion (its checkout left open: a
subscription that renews holds the deletion back) also ends the subscription at once
(``refund_late_invoice``). If the gateway refuses the refund, the order is held for an administrator
(``review``), as a payment of the wrong amount is. Checkouts are refused for a deleted or
disabled account (``orders.start_checkout``).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.audit import service as audit
from store.billing import coupons, orders, shapes, subscriptions
from store.billing.gateway import GatewayError, dig
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing

log = logging.getLogger("store.billing")

ENDED = "The account was deleted before the payment completed."
OPEN = ("pending", "requires_action")


def end_checkouts(session: Session, account: Account) -> int:
    """Fail the account's open one-time checkouts (at its deletion); how many."""
    ended = 0
    for order in session.scalars(
        select(Order).where(
            Order.account_id == account.id, Order.kind == "one_time", Order.status.in_(OPEN)
        )
    ):
        ended += orders.mark_failed(session, order, reason=ENDED)
    return ended


def refund_late_payment(
    session: Session, billing: Billing, order: Order, *, payment_ref: str, at: datetime
) -> None:
    """The buyer was deleted and the order's payment succeeded: record it, refund it all."""
    if order.paid_at is not None or order.status == "review":
        return  # recorded before (a redelivered event)
    order.payment_ref = order.payment_ref or payment_ref
    order.status, order.paid_at = "paid", at
    order.failure_reason = "Paid after the account was deleted: refunded in full."
    coupons.release(session, order)
    session.flush()
    try:
        total = billing.gateway.refund(
            session, billing, order=order, amount_minor=order.total_minor
        )
    except GatewayError as exc:
        order.status, order.paid_at = "failed", None
        orders.hold_for_review(
            session,
            order,
            payment_ref=payment_ref,
            reason=f"Paid after the account was deleted; the automatic refund failed: {exc}",
        )
        return
    if total is not None:
        orders.apply_refund(session, order, refunded_total=total, at=at)
    log.warning("order %s paid after its buyer was deleted: refunded", order.id)
    orders.record_refund(
        session, order, amount_minor=order.total_minor, reason="paid after the account was deleted"
    )


def refund_late_invoice(
    session: Session, billing: Billing, sub: Subscription, invoice: Any, *, at: datetime
) -> None:
    """An invoice of a deleted buyer's subscription was paid: the subscription ends at once
    (at the gateway too) and the payment is refunded in full. An invoice paid before the
    deletion, delivered again, changes nothing."""
    invoice_ref = str(dig(invoice, "id") or "")
    order = subscriptions.invoice_order(session, sub, invoice_ref)
    if order is not None and order.paid_at is not None:
        return
    if sub.status not in subscriptions.FINAL:
        try:
            billing.gateway.cancel_now(session, billing, subscription=sub)
        except GatewayError as exc:
            log.error("subscription %s of a deleted account not canceled: %s", sub.id, exc)
        if sub.status not in subscriptions.FINAL:
            sub.status, sub.canceled_at = "canceled", at
        session.flush()
    if order is None:
        # no checkout order to refund against: an administrator looks at it
        log.error("invoice %s of deleted account's subscription %s has no order", invoice_ref,
                  sub.id)  # fmt: skip
        audit.record(
            session,
            action="order.review",
            target=sub,
            org=sub.product.organization_id,
            details={
                "reason": "invoice paid after the account was deleted",
                "invoice": invoice_ref,
            },
        )
        return
    order.gateway_ref = order.gateway_ref or invoice_ref
    try:
        payment_ref = shapes.invoice_payment(billing, invoice, required=True) or invoice_ref
    except GatewayError as exc:  # the payment to refund is needed now: told again later
        from store.billing.webhooks import RetryLater

        raise RetryLater(f"the payment of invoice {invoice_ref} is not known: {exc}") from exc
    refund_late_payment(session, billing, order, payment_ref=payment_ref, at=at)
