"""Catching up with the gateway when a webhook is late or lost.

``reconcile_order`` fetches an open order's PaymentIntent (one-time) or subscription and
first invoice from the gateway and applies what it says through the same handlers the
webhooks use, so fulfilment stays idempotent whichever comes first. The order page and API
call it for a pending order; ``store billing reconcile`` calls it for every open order and
refreshes every running subscription (``reconcile_all``), from a timer; it also completes
plan changes left pending by a process that stopped (``plan_changes.complete_stale``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.billing import orders, plan_changes, subscriptions, webhooks
from store.billing.gateway import GatewayError
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.db import utcnow

log = logging.getLogger("store.billing")

UNPAID = ("pending", "requires_action")
RUNNING = ("incomplete", "trialing", "active", "past_due")


def reconcile_order(session: Session, billing: Billing, order: Order) -> bool:
    """Apply the gateway's state of an unpaid order; True if the order changed."""
    gateway = billing.gateway
    if order.status not in UNPAID or order.gateway != gateway.name:
        return False
    before = order.status
    now = utcnow()
    try:
        if order.kind == "one_time":
            if not order.payment_ref:
                return False
            pi = gateway.fetch_payment(order.payment_ref)
            if pi is None:
                return False
            status = str(pi.get("status"))
            if status == "succeeded":
                webhooks.HANDLERS["payment_intent.succeeded"](session, billing, pi, now)
            elif status == "requires_payment_method" and pi.get("last_payment_error"):
                webhooks.HANDLERS["payment_intent.payment_failed"](session, billing, pi, now)
            elif status == "canceled":
                webhooks.HANDLERS["payment_intent.canceled"](session, billing, pi, now)
        else:
            sub = subscriptions.find_locked(
                session, order.gateway, None, str(order.subscription_id)
            )
            if sub is None or not sub.gateway_ref:
                return False
            fresh = gateway.fetch_subscription(sub.gateway_ref)
            if fresh is not None:
                subscriptions.apply_snapshot(session, billing, sub, fresh, at=now, fresh=True)
            invoice = gateway.fetch_invoice(order.gateway_ref) if order.gateway_ref else None
            if invoice is not None and invoice.get("status") == "paid":
                subscriptions.invoice_paid(session, billing, sub, invoice, at=now)
    except GatewayError as exc:
        log.warning("could not reconcile order %s: %s", order.id, exc)
        return False
    session.flush()
    session.refresh(order)
    if order.status != before:
        log.info("order %s reconciled with the gateway: %s -> %s", order.id, before, order.status)
    return order.status != before


@dataclass
class Report:
    orders_checked: int = 0
    subscriptions_checked: int = 0
    changed: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def reconcile_all(session: Session, billing: Billing, *, since: datetime | None = None) -> Report:
    """``store billing reconcile``: every unpaid order (created since ``since``, default the
    last 30 days) and every running subscription of this gateway, compared and fixed."""
    since = since or utcnow() - timedelta(days=30)
    report = Report()
    open_orders = session.scalars(
        select(Order)
        .where(
            Order.gateway == billing.gateway.name,
            Order.status.in_(UNPAID),
            Order.created_at >= since,
        )
        .order_by(Order.created_at)
    ).all()
    for order in open_orders:
        report.orders_checked += 1
        before = order.status
        with session.begin_nested():
            if reconcile_order(session, billing, order):
                report.changed.append({"order": str(order.id), "from": before, "to": order.status})
    running = session.scalars(
        select(Subscription).where(
            Subscription.gateway == billing.gateway.name,
            Subscription.status.in_(RUNNING),
            Subscription.gateway_ref.is_not(None),
        )
    ).all()
    for sub in running:
        report.subscriptions_checked += 1
        assert sub.gateway_ref is not None
        try:
            fresh = billing.gateway.fetch_subscription(sub.gateway_ref)
        except GatewayError as exc:
            report.errors.append(f"subscription {sub.id}: {exc}")
            continue
        if fresh is None:
            continue
        before = sub.status
        with session.begin_nested():
            subscriptions.apply_snapshot(session, billing, sub, fresh, at=utcnow(), fresh=True)
        if sub.status != before:
            report.changed.append({"subscription": str(sub.id), "from": before, "to": sub.status})
    for change, status in plan_changes.complete_stale(session, billing):
        if status.startswith("error"):
            report.errors.append(f"plan change {change.id}: {status}")
        else:
            report.changed.append({"plan_change": str(change.id), "from": "pending", "to": status})
    session.flush()
    return report


def order_status_refresh(session: Session, billing: Billing, order_id: Any) -> bool:
    """One write unit for the order page: lock the order, reconcile it."""
    order = orders.lock_order(session, order_id)
    return reconcile_order(session, billing, order)
