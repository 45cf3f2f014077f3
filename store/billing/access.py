"""Billing follows access: when the store stops someone's access, it stops billing them too.

Rules (each applied whatever path the change came by: an administrator, a publisher, the
Stripe dashboard's events, the command line):

- A full refund of a subscription payment cancels the subscription at the gateway at once
  (the refund already revoked the access it paid for). A partial refund changes nothing.
- Unpublishing a product sets its subscriptions to cancel at the end of the paid period:
  subscribers keep access until then and are told why. Publishing it again before that
  lifts the cancellation the unpublishing made (not one the customer asked for).
- An operator's suspension cancels the product's subscriptions at once.
- A dispute (chargeback) suspends access and stops the next renewal; a lost dispute revokes
  access and cancels the subscription at once; a won one restores both.

The decision is recorded on the subscription (``end_requested``, ``end_reason``) in the same
transaction as its cause, then sent to the gateway. A gateway that cannot be reached leaves
the record in place and the sweep (``store billing sweep``) sends it again, so the gateway
always ends up agreeing, however late. A decision to end "now" is never weakened to
"period_end", and a customer cannot resume a subscription the store ended.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.billing.gateway import GatewayError
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.catalog.models import Product
from store.db import utcnow
from store.licensing import entitlements
from store.licensing.models import Entitlement
from store.licensing.signer import LicenseSigner

log = logging.getLogger("store.billing")

FINAL = ("canceled", "expired")
OPEN = ("incomplete", "trialing", "active", "past_due")
NOW, PERIOD_END = "now", "period_end"

# Why billing stopped, as the buyer is told it (keys are stored in end_reason).
END_REASONS = {
    "refunded": "The payment was refunded, so the subscription was canceled.",
    "unpublished": (
        "The publisher stopped selling this product. Your access continues until the end of "
        "the period you paid for; you will not be charged again."
    ),
    "suspended": "The store's operators suspended this product; the subscription was canceled.",
    "disputed": (
        "A payment was disputed with your bank: access is paused and the subscription will not "
        "renew until the dispute is settled."
    ),
    "dispute_lost": "A disputed payment was returned to you, so the subscription was canceled.",
}
DISPUTE_SUSPENSION = "Payment disputed"


def _signer(billing: Billing | None) -> LicenseSigner | None:
    return billing.signer if billing is not None else None


def end_message(sub: Subscription) -> str:
    return END_REASONS.get(sub.end_reason or "", "")


# --- requesting and sending the end of billing -------------------------------------------


def request_end(
    session: Session, billing: Billing | None, sub: Subscription, *, when: str, reason: str
) -> bool:
    """Record that the subscription's billing stops (``when``: now or period_end) and tell
    the gateway when a billing runtime is at hand. False if nothing changed."""
    if sub.status in FINAL:
        return False
    if sub.end_requested == NOW or (sub.end_requested == when and sub.end_reason == reason):
        return False
    sub.end_requested, sub.end_reason, sub.end_requested_at = when, reason, utcnow()
    session.flush()
    if billing is not None:
        send_end(session, billing, sub)
    return True


def send_end(session: Session, billing: Billing, sub: Subscription) -> bool:
    """Make the gateway agree with the recorded decision; True once it does."""
    from store.billing import subscriptions

    if sub.status in FINAL or sub.end_requested is None:
        return True
    if sub.gateway != billing.gateway.name:
        return False
    if sub.end_requested == NOW and sub.gateway_ref is None:
        # It never reached the gateway (a checkout still being answered): nothing to cancel.
        sub.status, sub.canceled_at = "canceled", sub.canceled_at or utcnow()
        session.flush()
        return True
    try:
        if sub.end_requested == NOW:
            fresh = billing.gateway.cancel_now(session, billing, subscription=sub)
        elif not sub.cancel_at_period_end:
            fresh = billing.gateway.set_cancel_at_period_end(
                session, billing, subscription=sub, cancel=True
            )
        else:
            return True
    except GatewayError as exc:
        log.warning("subscription %s: billing not stopped yet (%s); retried", sub.id, exc)
        return False
    if fresh is not None:
        subscriptions.apply_snapshot(session, billing, sub, fresh, at=utcnow(), fresh=True)
    session.flush()
    return sub.status in FINAL or (sub.end_requested == PERIOD_END and sub.cancel_at_period_end)


def lift_end(session: Session, billing: Billing | None, sub: Subscription, *, reason: str) -> bool:
    """Undo a period-end cancellation the store made for ``reason`` (never the customer's).

    The record is lifted once the gateway agrees: a gateway that cannot be reached leaves it
    in place, and the sweep lifts it later (``retry_pending``). Without a runtime only the
    record is lifted."""
    if sub.status in FINAL or sub.end_reason != reason or sub.end_requested != PERIOD_END:
        return False
    tell = (
        billing is not None
        and sub.gateway == billing.gateway.name
        and sub.cancel_at_period_end
        and not sub.canceled_by_customer
    )
    fresh = None
    if tell:
        assert billing is not None
        try:
            fresh = billing.gateway.set_cancel_at_period_end(
                session, billing, subscription=sub, cancel=False
            )
        except GatewayError as exc:
            log.warning("subscription %s still ends at period end: %s; retried", sub.id, exc)
            return False
    sub.end_requested, sub.end_reason, sub.end_requested_at = None, None, None
    session.flush()
    if fresh is not None:
        from store.billing import subscriptions

        assert billing is not None
        subscriptions.apply_snapshot(session, billing, sub, fresh, at=utcnow(), fresh=True)
    return True


def retry_pending(session: Session, billing: Billing, *, limit: int = 200) -> int:
    """The sweep: lift the period-end cancellations of products published again, then send
    every decision the gateway does not reflect yet."""
    done = 0
    republished = session.scalars(
        select(Subscription)
        .join(Product, Product.id == Subscription.product_id)
        .where(
            Product.status == "published",
            Subscription.end_reason == "unpublished",
            Subscription.end_requested == PERIOD_END,
            Subscription.status.in_(OPEN),
        )
        .order_by(Subscription.end_requested_at)
        .limit(limit)
    ).all()
    for sub in republished:
        done += int(lift_end(session, billing, sub, reason="unpublished"))
    rows = session.scalars(
        select(Subscription)
        .where(
            Subscription.end_requested.is_not(None),
            Subscription.status.in_(OPEN),
            Subscription.gateway == billing.gateway.name,
        )
        .order_by(Subscription.end_requested_at)
        .limit(limit)
    ).all()
    for sub in rows:
        if sub.end_requested == PERIOD_END and sub.cancel_at_period_end:
            continue
        done += int(send_end(session, billing, sub))
    return done


# --- refunds and disputes -------------------------------------------------------------------


def after_refund(session: Session, billing: Billing | None, order: Order) -> None:
    """A fully refunded subscription payment: billing stops at once."""
    if order.status != "refunded" or order.subscription_id is None:
        return
    sub = session.get(Subscription, order.subscription_id)
    if sub is not None:
        request_end(session, billing, sub, when=NOW, reason="refunded")


def _entitlement(session: Session, order: Order) -> Entitlement | None:
    return session.get(Entitlement, order.entitlement_id) if order.entitlement_id else None


def open_disputes(session: Session, entitlement_id: object) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Order)
            .where(Order.entitlement_id == entitlement_id, Order.dispute_status == "open")
        )
        or 0
    )


def dispute_opened(
    session: Session, billing: Billing | None, order: Order, *, at: datetime
) -> bool:
    """A chargeback was opened: access pauses, the subscription will not renew."""
    if order.dispute_status is not None:
        return False  # already open, or already settled (events out of order)
    order.dispute_status, order.disputed_at = "open", at
    session.flush()
    _hold(session, billing, order)
    return True


def _hold(session: Session, billing: Billing | None, order: Order) -> None:
    """An open dispute's effect: the access it paid for pauses, no renewal."""
    entitlement = _entitlement(session, order)
    if entitlement is not None and entitlement.status == "active":
        entitlements.set_status(
            session,
            entitlement=entitlement,
            status="suspended",
            reason=f"{DISPUTE_SUSPENSION} (order {order.receipt_number or order.id})",
            signer=_signer(billing),
        )
    sub = session.get(Subscription, order.subscription_id) if order.subscription_id else None
    if sub is not None:
        request_end(session, billing, sub, when=PERIOD_END, reason="disputed")


def dispute_closed(
    session: Session, billing: Billing | None, order: Order, *, won: bool, at: datetime
) -> bool:
    """The dispute is settled: lost revokes access and cancels; won restores both."""
    if order.dispute_status in ("won", "lost"):
        return False
    order.dispute_status = "won" if won else "lost"
    order.disputed_at = order.disputed_at or at
    session.flush()
    if not won:
        _take_back(session, billing, order)
        return True
    entitlement = _entitlement(session, order)
    sub = session.get(Subscription, order.subscription_id) if order.subscription_id else None
    if (
        entitlement is not None
        and entitlement.status == "suspended"
        and entitlement.reason.startswith(DISPUTE_SUSPENSION)
        and open_disputes(session, entitlement.id) == 0
        and (sub is None or sub.status not in FINAL)
    ):
        entitlements.set_status(
            session,
            entitlement=entitlement,
            status="active",
            reason="Dispute won",
            signer=_signer(billing),
        )
    if sub is not None and (entitlement is None or open_disputes(session, entitlement.id) == 0):
        lift_end(session, billing, sub, reason="disputed")
    return True


def _take_back(session: Session, billing: Billing | None, order: Order) -> None:
    """A lost dispute's effect: the money went back, so the access goes, billing stops."""
    entitlement = _entitlement(session, order)
    if entitlement is not None:
        entitlements.revoke(
            session,
            entitlement=entitlement,
            actor=None,
            reason=f"Dispute lost for order {order.receipt_number or order.id}",
        )
    sub = session.get(Subscription, order.subscription_id) if order.subscription_id else None
    if sub is not None:
        request_end(session, billing, sub, when=NOW, reason="dispute_lost")


def after_payment(session: Session, billing: Billing | None, order: Order) -> None:
    """A payment told after its dispute (events come in any order): the access it just gave
    is held, or taken back, as the dispute stands."""
    if order.dispute_status == "open":
        _hold(session, billing, order)
    elif order.dispute_status == "lost":
        _take_back(session, billing, order)


# --- the product's status ------------------------------------------------------------------


def product_status_changed(session: Session, product: Product, old: str, new: str) -> int:
    """In the catalog edit's transaction, without the gateway (store.billing.catalog_follow):
    unpublished, subscriptions are to end at period end; suspended, at once. Published again,
    nothing here: ``follow_product`` lifts the unpublishing's decisions with the gateway.
    Returns the subscriptions changed."""
    if old == new or new == "published":
        return 0
    changed = 0
    for sub in _open_subscriptions(session, product):
        if new == "suspended":
            changed += request_end(session, None, sub, when=NOW, reason="suspended")
        elif new == "draft" and old == "published":
            # A checkout not yet answered never started: nothing to keep until period end.
            when = NOW if sub.status == "incomplete" else PERIOD_END
            changed += request_end(session, None, sub, when=when, reason="unpublished")
    return changed


def follow_product(session: Session, billing: Billing, product: Product) -> int:
    """After a catalog edit committed (and in every sweep): make the gateway agree with the
    product's status. Published: the unpublishing's period-end cancellations are lifted (never
    the customer's); otherwise the recorded decisions are sent. Returns the subscriptions
    the gateway now agrees on."""
    done = 0
    for sub in _open_subscriptions(session, product):
        if product.status == "published":
            done += lift_end(session, billing, sub, reason="unpublished")
        elif sub.end_requested is not None and sub.gateway == billing.gateway.name:
            done += send_end(session, billing, sub)
    return done


def _open_subscriptions(session: Session, product: Product) -> list[Subscription]:
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.product_id == product.id, Subscription.status.in_(OPEN))
            .with_for_update(of=Subscription)
            .order_by(Subscription.created_at)
        )
    )


def ended_by_store(sub: Subscription) -> bool:
    """The store stopped this subscription's billing: the customer cannot resume it."""
    return sub.end_requested is not None
