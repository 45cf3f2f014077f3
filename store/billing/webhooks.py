"""Payment events: verified, recorded once, and applied through the lifecycle services.

``process_event`` is the one entry for Stripe's webhooks and the test gateway's events. It
first inserts ``ProcessedEvent(source, event_id)`` inside the caller's transaction: the
database's unique key makes a second delivery (even a concurrent one, to another process)
fail that insert, and it is acknowledged without acting. If handling fails, the transaction
rolls back with the record, so a redelivery is processed again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.billing import (
    access,
    deleted_buyers,
    notices,
    orders,
    ownership,
    shapes,
    subscriptions,
)
from store.billing.gateway import GatewayError, dig, obj_id
from store.billing.models import PlanChange
from store.billing.runtime import Billing
from store.errors import StoreError
from store.idempotency import ProcessedEvent

log = logging.getLogger("store.billing")


class BadEvent(StoreError):
    status_code = 400
    code = "bad_event"


class RetryLater(StoreError):
    """The event names something not visible yet (its checkout is still committing)."""

    status_code = 503
    code = "retry_later"


def verify(body: bytes, signature: str | None, *, secret: str, tolerance: int) -> dict[str, Any]:
    """The event in a Stripe webhook request, after checking its signature and age."""
    # The signature (an HMAC over the raw bytes) first: an unsigned body is never parsed.
    # (Stripe signs the UTF-8 text; other bytes cannot match a signature, nor parse.)
    import stripe  # on first use: the library and its HTTP client are ≈ 17 MiB per worker

    payload = body.decode("utf-8", "replace")
    try:
        stripe.WebhookSignature.verify_header(payload, signature or "", secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        message = str(exc.user_message or exc)
        code = "stale_signature" if "tolerance" in message else "bad_signature"
        raise BadEvent(message, code=code) from None
    try:
        event = json.loads(body)
    except ValueError:
        raise BadEvent("The body is not a JSON event", code="malformed_event") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
        or not isinstance(dig(event, "data", "object"), dict)
    ):
        raise BadEvent("The event has no id, type or data.object", code="malformed_event")
    return event


@dataclass(frozen=True)
class Result:
    status: str  # processed | duplicate | ignored
    event_id: str
    event_type: str


Handler = Callable[[Session, Billing, dict[str, Any], datetime], None]


def event_time(event: dict[str, Any]) -> datetime:
    created = event.get("created")
    if isinstance(created, int | float) and created > 0:
        try:
            return datetime.fromtimestamp(int(created), UTC)
        except (ValueError, OverflowError, OSError):  # past year 9999: a 500 before
            pass
    return datetime.now(UTC)


def process_event(
    session: Session, billing: Billing, event: dict[str, Any], *, source: str = "stripe"
) -> Result:
    """Apply one event exactly once (see the module docstring)."""
    event_id, event_type = str(event["id"]), str(event["type"])
    try:
        with session.begin_nested():
            session.add(
                ProcessedEvent(source=source, event_id=event_id, event_type=event_type[:100])
            )
            session.flush()
    except IntegrityError:
        log.info("event %s already processed", event_id)
        return Result("duplicate", event_id, event_type)
    handler = HANDLERS.get(event_type)
    if handler is None:
        return Result("ignored", event_id, event_type)
    handler(session, billing, event["data"]["object"], event_time(event))
    return Result("processed", event_id, event_type)


# --- payment intents (one-time orders) --------------------------------------------------


# How long an event naming an order or subscription this store does not know is answered
# 503 (Stripe redelivers it: its checkout may still be committing). Older ones are
# acknowledged and logged: they belong to another store on the same Stripe account, or to
# data that is gone, and a 503 forever would get the endpoint disabled.
UNKNOWN_WINDOW = timedelta(minutes=10)


def _unknown(what: str, at: datetime) -> None:
    """Raise RetryLater for a young event naming something unknown; log an old one."""
    if datetime.now(UTC) - at < UNKNOWN_WINDOW:
        raise RetryLater(f"{what} is not known yet")
    log.warning("event for unknown %s acknowledged (sent %s)", what, at.isoformat())


def _order_of_intent(
    session: Session, billing: Billing, pi: dict[str, Any], at: datetime
) -> orders.Order | None:
    order_id = dig(pi, "metadata", "order_id")
    if not order_id:
        return None  # not a one-time order of this store (e.g. a subscription invoice's)
    try:
        oid = uuid.UUID(str(order_id))
    except ValueError:
        return None
    try:
        order = orders.lock_order(session, oid)
    except StoreError:
        _unknown(f"order {order_id}", at)
        return None
    if order.gateway != billing.gateway.name and order.gateway != "stripe":
        return None
    return order


def _intent_succeeded(session: Session, billing: Billing, pi: dict[str, Any], at: datetime) -> None:
    order = _order_of_intent(session, billing, pi, at)
    if order is None:
        return
    if order.gateway_ref is None and order.kind == "one_time":
        order.gateway_ref = str(pi["id"])
    amount, currency = int(pi.get("amount") or 0), str(pi.get("currency") or "").lower()
    if (amount, currency) != (order.total_minor, order.currency):
        # Never fulfil what was not paid as quoted: an administrator looks at it.
        orders.hold_for_review(
            session,
            order,
            payment_ref=str(pi["id"]),
            reason=f"Paid {amount} {currency}, expected {order.total_minor} {order.currency}",
        )
        return
    if order.account.deleted_at is not None:  # nothing is sold to a deleted account
        deleted_buyers.refund_late_payment(
            session, billing, order, payment_ref=str(pi["id"]), at=at
        )
        return
    if ownership.held_elsewhere(session, order):  # its checkout was closed, bought again
        ownership.refund_duplicate(session, billing, order, payment_ref=str(pi["id"]), at=at)
        return
    if orders.mark_paid(session, order, paid_at=at, payment_ref=str(pi["id"])):
        orders.notify_paid(session, billing, order)
        access.after_payment(session, billing, order)  # disputed before it was told paid


def _intent_failed(session: Session, billing: Billing, pi: dict[str, Any], at: datetime) -> None:
    order = _order_of_intent(session, billing, pi, at)
    if order is None:
        return
    message = dig(pi, "last_payment_error", "message") or "The payment failed."
    if order.payment_ref is None:
        order.payment_ref = str(pi["id"])
    orders.mark_failed(session, order, reason=str(message))


def _intent_requires_action(
    session: Session, billing: Billing, pi: dict[str, Any], at: datetime
) -> None:
    order = _order_of_intent(session, billing, pi, at)
    if order is not None:
        orders.mark_requires_action(session, order)


def _intent_canceled(session: Session, billing: Billing, pi: dict[str, Any], at: datetime) -> None:
    order = _order_of_intent(session, billing, pi, at)
    if order is not None:
        orders.mark_failed(session, order, reason="The payment was canceled.")


# --- subscriptions and invoices ----------------------------------------------------------


def _subscription(
    session: Session, billing: Billing, ref: str | None, local_id: Any
) -> subscriptions.Subscription | None:
    sub = subscriptions.find_locked(
        session, billing.gateway.name, ref, str(local_id) if local_id else None
    )
    if sub is None and ref and billing.gateway.name != "stripe":
        # Events signed for Stripe while the test gateway runs: Stripe subscriptions still apply.
        sub = subscriptions.find_locked(session, "stripe", ref, str(local_id) if local_id else None)
    return sub


def _replaced(session: Session, ref: str | None) -> bool:
    """A gateway subscription a plan change replaced (and canceled): its events are done."""
    if not ref:
        return False
    found = session.scalar(
        select(PlanChange.id).where(PlanChange.replaced_gateway_ref == ref).limit(1)
    )
    if found is not None:
        log.info("event for replaced gateway subscription %s acknowledged", ref)
    return found is not None


def _subscription_changed(
    session: Session, billing: Billing, obj: dict[str, Any], at: datetime
) -> None:
    sub = _subscription(
        session, billing, obj_id(obj.get("id")), dig(obj, "metadata", "subscription_id")
    )
    if sub is None:
        if dig(obj, "metadata", "subscription_id") and not _replaced(
            session, obj_id(obj.get("id"))
        ):
            _unknown(f"subscription {dig(obj, 'metadata', 'subscription_id')}", at)
        return
    subscriptions.refresh_from_gateway(session, billing, sub, obj, at=at)


def _invoice_sub(
    session: Session, billing: Billing, invoice: dict[str, Any], at: datetime
) -> subscriptions.Subscription | None:
    ref = subscriptions.invoice_subscription_ref(invoice)
    if ref is None:
        return None
    local_id = dig(invoice, "parent", "subscription_details", "metadata", "subscription_id") or dig(
        invoice, "subscription_details", "metadata", "subscription_id"
    )
    sub = _subscription(session, billing, ref, local_id)
    if sub is None and local_id and not _replaced(session, ref):
        _unknown(f"subscription {local_id}", at)
    return sub


def _invoice_paid(
    session: Session, billing: Billing, invoice: dict[str, Any], at: datetime
) -> None:
    sub = _invoice_sub(session, billing, invoice, at)
    if sub is not None and sub.account.deleted_at is not None:  # nothing sold to it
        deleted_buyers.refund_late_invoice(session, billing, sub, invoice, at=at)
    elif sub is not None and (checkout := ownership.closed_before_start(session, sub)):
        ownership.refund_unstarted(session, billing, sub, checkout, invoice, at=at)
    elif sub is not None:
        subscriptions.invoice_paid(session, billing, sub, invoice, at=at)


def _invoice_failed(
    session: Session, billing: Billing, invoice: dict[str, Any], at: datetime
) -> None:
    sub = _invoice_sub(session, billing, invoice, at)
    if sub is not None:
        subscriptions.invoice_failed(session, billing, sub, invoice, at=at)


# --- refunds and disputes -----------------------------------------------------------------


def _order_of_payment(session: Session, billing: Billing, ref: str | None) -> orders.Order | None:
    """The order whose payment (PaymentIntent) or invoice is ``ref``, locked."""
    if not ref:
        return None
    for gateway in dict.fromkeys((billing.gateway.name, "stripe")):
        order = orders.find_order_by_payment(session, gateway, ref)
        if order is not None:
            return orders.lock_order(session, order.id)
    return None


def _order_of_charge(
    session: Session, billing: Billing, charge: dict[str, Any], at: datetime
) -> orders.Order | None:
    """The order a charge (or a dispute's charge) paid, by its PaymentIntent or its invoice.

    Old shape: the charge names both. New shape: only the PaymentIntent, so a renewal whose
    order has no payment reference yet (its ``invoice.paid`` came without one) is found by
    the invoice the gateway says the PaymentIntent paid, and gets the reference. A renewal
    whose ``invoice.paid`` was not told yet is recorded from the gateway's invoice first;
    one not at the gateway either answers 503 for ``UNKNOWN_WINDOW`` (Stripe redelivers)."""
    payment_ref = obj_id(charge.get("payment_intent"))
    order = _order_of_payment(session, billing, payment_ref)
    if order is not None:
        return order
    try:
        invoice_ref = shapes.charge_invoice(billing, charge)
    except GatewayError as exc:
        raise RetryLater(f"the invoice of payment {payment_ref} is not known: {exc}") from exc
    if not invoice_ref:
        return None
    order = _order_of_payment(session, billing, invoice_ref)
    if order is None:
        # A renewal's order is made by its invoice.paid, which may come after this event
        # (even after the window of _unknown, when deliveries failed for a while): the
        # invoice as the gateway has it now is recorded first, so the refund is never lost.
        order = _order_of_paid_invoice(session, billing, invoice_ref, at)
    if order is None:
        _unknown(f"invoice {invoice_ref}", at)  # redelivered until its invoice is known
        return None
    if order.payment_ref is None and payment_ref:
        order.payment_ref = payment_ref
    return order


def _charge_refunded(
    session: Session, billing: Billing, charge: dict[str, Any], at: datetime
) -> None:
    order = _order_of_charge(session, billing, charge, at)
    if order is None:
        return
    total = int(charge.get("amount_refunded") or 0)
    if charge.get("refunded") and total == 0:
        total = int(charge.get("amount") or order.total_minor)
    before = order.refunded_minor
    if orders.apply_refund(session, order, refunded_total=total, at=at):
        notices.refund(
            session, billing.store, order=order, amount_minor=order.refunded_minor - before
        )
    access.after_refund(session, billing, order)


def _order_of_paid_invoice(
    session: Session, billing: Billing, invoice_ref: str, at: datetime
) -> orders.Order | None:
    """The order of a paid invoice of this store's subscriptions not recorded yet, recorded
    from the gateway's copy (None: the gateway has none, or it is not this store's)."""
    try:
        invoice = billing.gateway.fetch_invoice(invoice_ref)
    except GatewayError as exc:
        raise RetryLater(f"invoice {invoice_ref} could not be fetched: {exc}") from exc
    if invoice is None or str(invoice.get("status")) != "paid":
        return None
    if _invoice_sub(session, billing, invoice, at) is None:
        return None
    _invoice_paid(session, billing, invoice, at)
    return _order_of_payment(session, billing, invoice_ref)


def _order_of_dispute(
    session: Session, billing: Billing, dispute: dict[str, Any], at: datetime
) -> orders.Order | None:
    charge = dispute.get("charge")
    target = {
        "payment_intent": dispute.get("payment_intent") or dig(charge, "payment_intent"),
        "invoice": dig(charge, "invoice"),
    }
    return _order_of_charge(session, billing, target, at)


def _dispute_created(
    session: Session, billing: Billing, dispute: dict[str, Any], at: datetime
) -> None:
    order = _order_of_dispute(session, billing, dispute, at)
    if order is not None:
        access.dispute_opened(session, billing, order, at=at)


def _dispute_closed(
    session: Session, billing: Billing, dispute: dict[str, Any], at: datetime
) -> None:
    """Stripe's closed statuses: ``lost``; ``won``, and for inquiries ``warning_closed``
    (no money was taken back) — everything but lost restores access."""
    order = _order_of_dispute(session, billing, dispute, at)
    if order is not None:
        won = str(dispute.get("status") or "") != "lost"
        access.dispute_closed(session, billing, order, won=won, at=at)


def _setup_settled(session: Session, billing: Billing, seti: dict[str, Any], at: datetime) -> None:
    """A card setup the customer confirmed (or failed) with their bank: finish the card
    replacement waiting for it (the gateway's current SetupIntent decides)."""
    local_id = dig(seti, "metadata", "subscription_id")
    if not local_id:
        return
    sub = subscriptions.find_locked(session, billing.gateway.name, None, str(local_id))
    if sub is None or sub.pending_setup_ref != seti.get("id"):
        return  # finished already (by the return page), or not this store's
    try:
        subscriptions.complete_card_setup(session, billing, sub=sub, setup_ref=str(seti["id"]))
    except StoreError as exc:
        raise RetryLater(f"card setup {seti.get('id')}: {exc.detail}") from exc


HANDLERS: dict[str, Handler] = {
    "setup_intent.succeeded": _setup_settled,
    "setup_intent.setup_failed": _setup_settled,
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "payment_intent.requires_action": _intent_requires_action,
    "payment_intent.canceled": _intent_canceled,
    "customer.subscription.created": _subscription_changed,
    "customer.subscription.updated": _subscription_changed,
    "customer.subscription.deleted": _subscription_changed,
    "customer.subscription.paused": _subscription_changed,
    "customer.subscription.resumed": _subscription_changed,
    "invoice.paid": _invoice_paid,
    "invoice.payment_succeeded": _invoice_paid,
    "invoice.payment_failed": _invoice_failed,
    "charge.refunded": _charge_refunded,
    "charge.dispute.created": _dispute_created,
    "charge.dispute.closed": _dispute_closed,
}
