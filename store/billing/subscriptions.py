"""Subscriptions: what subscription and invoice events do, cancel/resume, and the sweep.

Rules that keep state right whatever order events arrive in:
- The entitlement's ``ends_at`` is the end of the last *paid* period; it only moves forward.
- Status changes carry the event's gateway time; one older than the last applied is ignored,
  and ``canceled``/``expired`` are final.
- With Stripe, subscription events re-fetch the subscription, so the newest state is applied.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing import access, coupons, notices, prices, shapes, trials
from store.billing import orders as order_service
from store.billing.gateway import (
    GatewayError,
    Outcome,
    PaymentInput,
    dig,
    obj_id,
    refusal_is_conflict,
)
from store.billing.models import Order, Subscription
from store.billing.pricing import tax_on
from store.billing.runtime import Billing
from store.db import lock_row, utcnow
from store.errors import Conflict, NotFound, PaymentRequired
from store.licensing import entitlements
from store.licensing.models import Entitlement

log = logging.getLogger("store.billing")

FINAL = ("canceled", "expired")
STRIPE_STATUS = {
    "incomplete": "incomplete",
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "paused": "past_due",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}


def ts(value: Any) -> datetime | None:
    if value in (None, "", 0):
        return None
    return datetime.fromtimestamp(int(value), UTC)


# --- finding --------------------------------------------------------------------------


def find_locked(
    session: Session, gateway: str, ref: str | None, local_id: str | None = None
) -> Subscription | None:
    """The subscription by gateway ref, or by our own id from the gateway's metadata."""
    stmt = select(Subscription).with_for_update(of=Subscription)
    stmt = stmt.execution_options(populate_existing=True)
    if ref:
        sub = session.scalar(
            stmt.where(Subscription.gateway == gateway, Subscription.gateway_ref == ref)
        )
        if sub is not None:
            return sub
    if local_id:
        try:
            sub_id = uuid.UUID(str(local_id))
        except ValueError:
            return None
        sub = session.scalar(stmt.where(Subscription.id == sub_id))
        if sub is not None and sub.gateway == gateway:
            if ref and sub.gateway_ref is None:
                sub.gateway_ref = ref
            elif ref and sub.gateway_ref != ref:
                # A gateway subscription this one replaced (a plan change with a new
                # interval starts a new one): its events are not about this subscription.
                return None
            return sub
    return None


def subscriptions_of(session: Session, account: Account) -> list[Subscription]:
    return list(
        session.scalars(
            select(Subscription)
            .where(Subscription.account_id == account.id, Subscription.gateway_ref.is_not(None))
            .order_by(Subscription.created_at.desc())
        )
    )


def get_visible_subscription(session: Session, sub_id: uuid.UUID, account: Account) -> Subscription:
    sub = session.get(Subscription, sub_id)
    if sub is None or (sub.account_id != account.id and not account.is_admin):
        raise NotFound("No such subscription")
    return sub


# --- the entitlement behind a subscription --------------------------------------------


def _entitlement(session: Session, sub: Subscription) -> Entitlement | None:
    """The subscription's entitlement, its row locked and read again: a refund or a lost
    dispute revoking it meanwhile (another transaction) is seen, never overwritten."""
    if sub.entitlement_id is None:
        return None
    return lock_row(session, Entitlement, sub.entitlement_id)


def _ensure_entitlement(
    session: Session, sub: Subscription, *, ends_at: datetime, starts_at: datetime
) -> Entitlement:
    entitlement = _entitlement(session, sub)
    if entitlement is not None:
        return entitlement
    if ends_at <= starts_at:
        starts_at = min(starts_at, utcnow()) - timedelta(seconds=1)
    entitlement = entitlements.create_entitlement(
        session,
        tier=sub.tier,
        source="trial" if sub.status == "trialing" else "subscription",
        account=sub.account if sub.organization_id is None else None,
        org=sub.organization,
        source_ref=str(sub.id),
        starts_at=starts_at,
        ends_at=ends_at,
        reason=f"Subscription {sub.gateway_ref or sub.id}",
        quantity=sub.quantity,
        unit_seats=sub.unit_seats,
        features=sub.bought_features,
    )
    sub.entitlement_id = entitlement.id
    session.flush()
    return entitlement


def _paid_through(
    session: Session, billing: Billing, entitlement: Entitlement, period_end: datetime
) -> None:
    """A paid period: access runs to its end, any grace is over, a suspension lifted."""
    if entitlement.status == "revoked":
        log.warning("payment for revoked entitlement %s; access stays revoked", entitlement.id)
        return
    ends_at = entitlement.ends_at
    new_end = period_end if ends_at is None or period_end > ends_at else ends_at
    if new_end != ends_at or entitlement.grace_until is not None:
        entitlements.extend(
            session,
            entitlement=entitlement,
            ends_at=new_end,
            grace_until=None,
            signer=billing.signer,
        )
    if entitlement.status in ("suspended", "expired") and not access.open_disputes(
        session, entitlement.id
    ):
        entitlements.set_status(
            session,
            entitlement=entitlement,
            status="active",
            reason="Payment received",
            signer=billing.signer,
        )


def _first_held(session: Session, sub: Subscription) -> bool:
    """The subscription has no access yet and its checkout's payment is held for review (it
    charged less than the quote): the gateway calling it active gives nothing."""
    if sub.entitlement_id is not None:
        return False
    held = session.scalar(
        select(Order.id)
        .where(
            Order.subscription_id == sub.id,
            Order.holder_key.is_not(None),
            Order.status == "review",
        )
        .limit(1)
    )
    return held is not None


def _start_grace(session: Session, billing: Billing, sub: Subscription, at: datetime) -> None:
    entitlement = _entitlement(session, sub)
    if entitlement is None or entitlement.status != "active":
        return
    if entitlement.grace_until is not None:
        return  # a retry failing again does not lengthen the grace period
    grace_until = max(at, utcnow()) + timedelta(days=billing.settings.grace_days)
    entitlements.extend(
        session,
        entitlement=entitlement,
        ends_at=entitlement.ends_at,
        grace_until=grace_until,
        signer=billing.signer,
    )


def _end_now_if_over(session: Session, billing: Billing, sub: Subscription, now: datetime) -> None:
    """A canceled subscription: access runs to the end of the paid period, no grace."""
    entitlement = _entitlement(session, sub)
    if entitlement is None or entitlement.status == "revoked":
        return
    if entitlement.grace_until is not None:
        entitlements.extend(
            session,
            entitlement=entitlement,
            ends_at=entitlement.ends_at,
            grace_until=None,
            signer=billing.signer,
        )
    if entitlement.ends_at is not None and entitlement.ends_at <= now:
        if entitlement.status == "active":
            entitlements.set_status(
                session,
                entitlement=entitlement,
                status="expired",
                reason="Subscription ended",
                signer=billing.signer,
            )
        sub.status = "expired"


# --- subscription snapshots (customer.subscription.* events, re-fetched objects) ------


def period_end_of(obj: Any) -> datetime | None:
    """Current period end: on the item (new API shape) or on the subscription (old shape)."""
    item = dig(obj, "items", "data", 0)
    value = dig(item, "current_period_end") if item is not None else None
    return ts(value or dig(obj, "current_period_end"))


def period_start_of(obj: Any) -> datetime | None:
    item = dig(obj, "items", "data", 0)
    value = dig(item, "current_period_start") if item is not None else None
    return ts(value or dig(obj, "current_period_start"))


def apply_snapshot(
    session: Session,
    billing: Billing,
    sub: Subscription,
    obj: Any,
    *,
    at: datetime,
    fresh: bool = False,
) -> bool:
    """Bring the subscription in line with the gateway's object as of ``at``.

    ``fresh``: the object was just fetched from the gateway, so it is the newest state.
    """
    if not fresh and sub.last_event_at is not None and at < sub.last_event_at:
        return False
    status = STRIPE_STATUS.get(str(dig(obj, "status")), sub.status)
    if sub.status in FINAL and status not in FINAL:
        return False
    sub.last_event_at = max(at, sub.last_event_at) if sub.last_event_at else at
    if sub.status == "expired" and status == "canceled":
        status = "expired"
    was_final, was_ending = sub.status in FINAL, sub.cancel_at_period_end
    sub.status = status
    sub.cancel_at_period_end = bool(dig(obj, "cancel_at_period_end"))
    period_end = period_end_of(obj)
    if period_end is not None and period_end != sub.current_period_end:
        sub.current_period_start = period_start_of(obj)  # None: its invoice says
    sub.current_period_end = period_end or sub.current_period_end
    sub.trial_end = ts(dig(obj, "trial_end")) or sub.trial_end
    sub.gateway_quantity = _line_quantity(dig(obj, "items", "data", 0)) or sub.gateway_quantity
    now = utcnow()
    if status == "trialing" and sub.trial_end is not None:
        entitlement = _ensure_entitlement(
            session, sub, ends_at=sub.trial_end, starts_at=ts(dig(obj, "start_date")) or now
        )
        _paid_through(session, billing, entitlement, sub.trial_end)
    elif (
        status == "active" and sub.current_period_end is not None and not _first_held(session, sub)
    ):
        start = period_start_of(obj) or ts(dig(obj, "start_date")) or now
        entitlement = _ensure_entitlement(
            session, sub, ends_at=sub.current_period_end, starts_at=start
        )
        if entitlement.status == "suspended":
            _paid_through(
                session, billing, entitlement, entitlement.ends_at or sub.current_period_end
            )
    elif status == "past_due":
        _start_grace(session, billing, sub, at)
    elif status in FINAL:
        sub.canceled_at = sub.canceled_at or ts(dig(obj, "canceled_at")) or at
        _end_now_if_over(session, billing, sub, now)
    follow_quantity(session, billing, sub)
    session.flush()
    ended = status in FINAL and not was_final and sub.entitlement_id is not None
    if ended or (sub.cancel_at_period_end and not was_ending and status not in FINAL):
        notices.canceled(session, billing.store, subscription=sub)
    return True


def refresh_from_gateway(
    session: Session, billing: Billing, sub: Subscription, obj: Any, *, at: datetime
) -> bool:
    """Apply a subscription event: the re-fetched object when the gateway has one."""
    fresh = None
    if sub.gateway_ref and sub.gateway == billing.gateway.name:
        try:
            fresh = billing.gateway.fetch_subscription(sub.gateway_ref)
        except GatewayError:
            fresh = None
    if fresh is not None:
        return apply_snapshot(session, billing, sub, fresh, at=max(at, utcnow()), fresh=True)
    return apply_snapshot(session, billing, sub, obj, at=at)


# --- invoices -------------------------------------------------------------------------


def invoice_subscription_ref(invoice: Any) -> str | None:
    return obj_id(
        dig(invoice, "parent", "subscription_details", "subscription")
        or dig(invoice, "subscription")
    )


def invoice_period_start(invoice: Any) -> datetime | None:
    starts = [ts(dig(line, "period", "start")) for line in dig(invoice, "lines", "data") or []]
    known = [s for s in starts if s is not None]
    return min(known) if known else ts(dig(invoice, "period_start"))


def invoice_period_end(invoice: Any) -> datetime | None:
    ends = []
    for line in dig(invoice, "lines", "data") or []:
        end = ts(dig(line, "period", "end"))
        if end is not None:
            ends.append(end)
    return max(ends) if ends else ts(dig(invoice, "period_end"))


def invoice_order(session: Session, sub: Subscription, invoice_ref: str) -> Order | None:
    order = session.scalar(
        select(Order)
        .where(Order.gateway == sub.gateway, Order.gateway_ref == invoice_ref)
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )
    if order is not None:
        return order
    # The checkout's order for the first invoice, before its gateway answer was recorded.
    return session.scalar(
        select(Order)
        .where(
            Order.subscription_id == sub.id,
            Order.gateway_ref.is_(None),
            Order.status.in_(("pending", "requires_action")),
        )
        .order_by(Order.created_at)
        .limit(1)
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )


def _is_proration(line: Any) -> bool:
    """A proration line (a plan or quantity changed mid-period), in either API shape."""
    return bool(
        dig(line, "proration")
        or dig(line, "parent", "subscription_item_details", "proration")
        or dig(line, "parent", "invoice_item_details", "proration")
    )


def _is_period_line(line: Any) -> bool:
    """The subscription's own line for a period (not a proration, not an invoice item such
    as a coupon's), in either API shape."""
    kind = dig(line, "type") or dig(line, "parent", "type")
    return kind in ("subscription", "subscription_item_details") and not _is_proration(line)


def _line_quantity(line: Any) -> int | None:
    value = dig(line, "quantity")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _line_end(line: Any) -> int:
    return int(dig(line, "period", "end") or 0)


def proration_only(invoice: Any) -> bool:
    """An invoice of prorations only (a change made mid-period, invoiced at once): it pays
    for the change, not for a period, so it is not counted as one of the charges."""
    lines = dig(invoice, "lines", "data") or []
    return any(_is_proration(x) for x in lines) and not any(_is_period_line(x) for x in lines)


def _new_period_start(invoice: Any) -> datetime | None:
    """When the period an invoice charges for starts (its period line's; None for an invoice
    of prorations only, which starts no period)."""
    lines = dig(invoice, "lines", "data") or []
    starts = [ts(dig(x, "period", "start")) for x in lines if _is_period_line(x)]
    known = [s for s in starts if s is not None]
    if known:
        return min(known)
    return None if proration_only(invoice) else invoice_period_start(invoice)


def invoice_quantity(invoice: Any) -> int | None:
    """How many units an invoice charges for: its period line's quantity, else (an invoice
    of prorations only) the quantity of its newest charged proration; None when its lines do
    not say."""
    lines = dig(invoice, "lines", "data") or []
    period = [x for x in lines if _is_period_line(x) and _line_quantity(x)]
    if not period:
        period = [
            x
            for x in lines
            if _is_proration(x) and int(dig(x, "amount") or 0) > 0 and _line_quantity(x)
        ]
    if not period:
        return None
    return _line_quantity(max(period, key=_line_end))


def expected_total(sub: Subscription, invoice: Any, *, tax_label: str) -> tuple[int, int]:
    """``(least, quantity)``: the least a renewal invoice may charge by the store's quote,
    and the units it pays for.

    The period's charge is the quote of that charge (``coupons.charge_quote``: the tier
    price the subscription renews at, the invoice's quantity, the recorded tax rate, the
    coupon while it covers the charge). Prorations for a change made at the gateway (seats
    changed in Stripe's dashboard) are added as the gateway computed them from the same
    price, with the recorded tax rate. A plan change's credit the store still carries may
    have been taken off."""
    lines = dig(invoice, "lines", "data") or []
    quantity = invoice_quantity(invoice) or sub.quantity
    prorations = [x for x in lines if _is_proration(x)]
    least = 0
    if any(_is_period_line(x) for x in lines) or not prorations:
        charge = coupons.charge_quote(
            sub, charge_index=sub.paid_charges, tax_label=tax_label, quantity=quantity
        )
        least = charge.total_minor
    rate = Decimal(sub.tax_rate or "0")
    for line in prorations:
        amount = int(dig(line, "amount") or 0)
        least += amount + (tax_on(amount, rate) if amount >= 0 else -tax_on(-amount, rate))
    credit = sub.credit_net_minor + sub.credit_tax_minor
    return max(0, least - credit), quantity


def invoice_amounts(invoice: Any) -> tuple[int, int]:
    """What an invoice charged: (total, tax), tax included in the total. The tax is the
    invoice's ``tax`` (older API shape) or the sum of its tax amounts (newer shapes)."""
    total = int(dig(invoice, "amount_paid") or dig(invoice, "amount_due") or 0)
    tax = dig(invoice, "tax")
    if tax is None:
        amounts = dig(invoice, "total_taxes") or dig(invoice, "total_tax_amounts") or []
        tax = sum(int(dig(a, "amount") or 0) for a in amounts)
    return total, min(int(tax or 0), total)


def _new_invoice_order(sub: Subscription, invoice: Any, invoice_ref: str) -> Order:
    total, tax = invoice_amounts(invoice)
    return Order(
        quantity=invoice_quantity(invoice) or sub.quantity,
        account_id=sub.account_id,
        organization_id=sub.organization_id,
        tier_id=sub.tier_id,
        product_id=sub.product_id,
        tier_price_id=sub.tier_price_id,
        subscription_id=sub.id,
        kind="subscription",
        amount_minor=total - tax,
        tax_minor=tax,
        currency=str(dig(invoice, "currency") or sub.currency),
        status="pending",
        gateway=sub.gateway,
        gateway_ref=invoice_ref,
    )


def invoice_paid(
    session: Session, billing: Billing, sub: Subscription, invoice: Any, *, at: datetime
) -> None:
    """A paid invoice (first, trial start or renewal): order paid, access to the period end."""
    tax_label = billing.settings.tax_label
    invoice_ref = str(dig(invoice, "id"))
    order = invoice_order(session, sub, invoice_ref)
    least: int | None = None
    if order is None:
        least, _ = expected_total(sub, invoice, tax_label=tax_label)  # before its credit is used
        order = _new_invoice_order(sub, invoice, invoice_ref)
        _renewal_terms(sub, order, tax_label, invoice)
        session.add(order)
        session.flush()
    elif order.gateway_ref is None:
        order.gateway_ref = invoice_ref
    if order.status == "review":
        return  # held for an administrator: told again, it changes nothing
    if order.paid_at is None:
        total, tax = invoice_amounts(invoice)
        if least is None:
            # The checkout's order carries its quote; a renewal's (made by a failed attempt)
            # is quoted now.
            least = (
                order.total_minor
                if order.holder_key is not None
                else expected_total(sub, invoice, tax_label=tax_label)[0]
            )
        currency = str(dig(invoice, "currency") or sub.currency).lower()
        if total < least or currency != sub.currency:
            reason = f"Paid {total} {currency}, expected {least} {sub.currency}"
            _hold_short(session, billing, sub, order, invoice, reason=reason, at=at)
            return
        # Recorded from what the gateway charged, which is what the receipt shows.
        if (total, tax) != (order.total_minor, order.tax_minor):
            if total or tax:
                log.warning(
                    "invoice %s charged %s (tax %s); the quote said %s (tax %s)",
                    invoice_ref,
                    total,
                    tax,
                    order.total_minor,
                    order.tax_minor,
                )
            if total or not order.total_minor:
                order.amount_minor, order.tax_minor = total - tax, tax
    period_end = invoice_period_end(invoice) or sub.current_period_end
    if order.period_end is None and period_end is not None:
        order.period_start = invoice_period_start(invoice)
        order.period_end = period_end
    if sub.current_period_end is None or (period_end and period_end > sub.current_period_end):
        sub.current_period_end = period_end
    start = _new_period_start(invoice)
    if (
        period_end is not None
        and period_end == sub.current_period_end
        and start is not None
        and start < period_end
        and (sub.current_period_start is None or start > sub.current_period_start)
    ):
        sub.current_period_start = start
    if sub.status not in FINAL and (sub.last_event_at is None or at >= sub.last_event_at):
        trial = sub.trial_end is not None and period_end is not None and period_end <= sub.trial_end
        sub.status = "trialing" if trial and order.total_minor == 0 else "active"
        sub.last_event_at = at
        if any(_is_period_line(line) for line in dig(invoice, "lines", "data") or []):
            # The newest word on the gateway's quantity: what it invoiced the period for.
            sub.gateway_quantity = invoice_quantity(invoice) or sub.gateway_quantity
    entitlement = None
    if period_end is not None:
        start = ts(dig(invoice, "period_start")) or at
        entitlement = _ensure_entitlement(session, sub, ends_at=period_end, starts_at=start)
        if (
            sub.status not in FINAL
            or entitlement.ends_at is None
            or period_end > entitlement.ends_at
        ):
            _paid_through(session, billing, entitlement, period_end)
    if order.payment_ref is None:
        # Old shape: on the invoice; new shape: its InvoicePayments, asked of the gateway.
        # Unknown now (the gateway could not be asked): filled in when a refund or a
        # dispute needs it (``shapes``).
        order.payment_ref = shapes.invoice_payment(billing, invoice)
    if order_service.mark_paid(session, order, paid_at=at, entitlement=entitlement):
        trial_start = (
            sub.trial_end is not None and period_end is not None and period_end <= sub.trial_end
        )
        if not trial_start and not proration_only(invoice):
            sub.paid_charges += 1
        _prepare_next_charge(session, billing, sub)
        order_service.notify_paid(session, billing, order)
        access.after_refund(session, billing, order)  # refunded before it was told paid
        access.after_payment(session, billing, order)  # disputed before it was told paid
    follow_quantity(session, billing, sub)
    session.flush()


def paid_quantity(session: Session, sub: Subscription) -> int | None:
    """The quantity of the subscription's newest paid payment (by the period it pays for,
    then when it was paid); None before the first."""
    return session.scalar(
        select(Order.quantity)
        .where(
            Order.subscription_id == sub.id,
            Order.paid_at.is_not(None),
            Order.status.in_(("paid", "partially_refunded")),
        )
        .order_by(Order.period_end.desc().nulls_last(), Order.paid_at.desc())
        .limit(1)
    )


def follow_quantity(session: Session, billing: Billing, sub: Subscription) -> None:
    """Seats follow the quantity the gateway's subscription has (read back from its events:
    seats changed in Stripe's dashboard), but never beyond the quantity last paid for: a
    decrease applies at once (Stripe applies it at once and credits the unused time on the
    next invoice), an increase once an invoice at that quantity is paid. The entitlement's
    seats change with it, and a new license is issued for them."""
    paid = paid_quantity(session, sub)
    if paid is None:
        return
    quantity = min(paid, sub.gateway_quantity) if sub.gateway_quantity else paid
    if quantity != sub.quantity:
        log.info("subscription %s: quantity %s -> %s", sub.id, sub.quantity, quantity)
        sub.quantity = quantity
        if sub.status not in FINAL:
            coupons.set_next_charge(sub, tax_label=billing.settings.tax_label)
    entitlement = _entitlement(session, sub)
    seats = sub.unit_seats  # per unit, as bought: a later edit of the tier changes nothing
    if entitlement is None or entitlement.status == "revoked" or seats is None:
        return
    if entitlement.seats != (total := entitlements.seats_for(seats, quantity)):
        entitlement.seats = total
        entitlements.extend(
            session,
            entitlement=entitlement,
            ends_at=entitlement.ends_at,
            grace_until=entitlement.grace_until,
            signer=billing.signer,
        )


def _hold_short(
    session: Session,
    billing: Billing,
    sub: Subscription,
    order: Order,
    invoice: Any,
    *,
    reason: str,
    at: datetime,
) -> None:
    """An invoice paid for less than the store's quote (a coupon or another price applied
    at the gateway): as a one-time order paid short, it is never fulfilled; the order goes
    to ``review`` (error log, ``order.review`` audit event) until an administrator decides.

    Access is not extended to the invoice's period. A renewal's buyer keeps the grace
    period of a failed renewal from now, once (visible on the license as ``grace_until``):
    they paid something, and an administrator's decision should not find them cut off; a
    first invoice gives no access at all."""
    period_end = invoice_period_end(invoice)
    if order.period_end is None and period_end is not None:
        order.period_start, order.period_end = invoice_period_start(invoice), period_end
    payment_ref = order.payment_ref or shapes.invoice_payment(billing, invoice)
    held = order_service.hold_for_review(session, order, payment_ref=payment_ref, reason=reason)
    entitlement = _entitlement(session, sub)
    if (
        held
        and entitlement is not None
        and sub.status not in FINAL
        and period_end is not None
        and (entitlement.ends_at is None or entitlement.ends_at < period_end)
    ):
        _start_grace(session, billing, sub, at)
    session.flush()


def _renewal_terms(sub: Subscription, order: Order, tax_label: str, invoice: Any) -> None:
    """A renewal's order, made from its invoice: the quote of this charge says its discount
    and coupon (when the invoice charged what the quote says). An invoice of prorations
    only is no charge of a period: no coupon, and a plan change's credit stays for the
    next renewal."""
    order.tax_rate = sub.tax_rate
    order.tax_country, order.vat_id = sub.tax_country, sub.vat_id
    order.reverse_charge = sub.reverse_charge
    if proration_only(invoice):
        return
    expected = coupons.charge_quote(
        sub, charge_index=sub.paid_charges, tax_label=tax_label, quantity=order.quantity
    )
    if sub.credit_net_minor or sub.credit_tax_minor:
        # A plan change's credit was taken off this invoice (as much of it as it covers).
        used_net = min(sub.credit_net_minor, max(0, expected.net_minor - order.amount_minor))
        used_tax = min(sub.credit_tax_minor, max(0, expected.tax_minor - order.tax_minor))
        sub.credit_net_minor -= used_net
        sub.credit_tax_minor -= used_tax
    if (order.amount_minor, order.tax_minor) == (expected.net_minor, expected.tax_minor):
        order.discount_minor = expected.discount_minor
        if expected.discount_minor:
            order.coupon_id, order.coupon_code = sub.coupon_id, sub.coupon_code


def _prepare_next_charge(session: Session, billing: Billing, sub: Subscription) -> None:
    """After a paid invoice: record what the next charge costs and, while a coupon covers
    it, have the gateway take the discount off the next invoice."""
    if sub.status in FINAL:
        return
    upcoming = coupons.set_next_charge(sub, tax_label=billing.settings.tax_label)
    if upcoming.discount_minor > 0:
        try:
            billing.gateway.discount_next_charge(session, billing, subscription=sub, quote=upcoming)
        except GatewayError as exc:
            # Undone with the rest of the event: Stripe delivers it again.
            from store.billing.webhooks import RetryLater

            raise RetryLater(
                f"The payment service did not take the next invoice's discount: {exc}"
            ) from exc


def invoice_failed(
    session: Session, billing: Billing, sub: Subscription, invoice: Any, *, at: datetime
) -> None:
    """A failed invoice: the first one fails the checkout; a renewal starts the grace period."""
    invoice_ref = str(dig(invoice, "id"))
    order = invoice_order(session, sub, invoice_ref)
    if order is None:
        order = _new_invoice_order(sub, invoice, invoice_ref)
        session.add(order)
        session.flush()
    elif order.gateway_ref is None:
        order.gateway_ref = invoice_ref
    message = dig(invoice, "last_finalization_error", "message") or "The payment was declined."
    order_service.mark_failed(session, order, reason=str(message))
    if sub.status in FINAL or (sub.last_event_at is not None and at < sub.last_event_at):
        return
    sub.last_event_at = at
    if sub.entitlement_id is None:
        trials.release(session, sub)
        return  # the first payment failed: the subscription never started
    sub.status = "past_due"
    _start_grace(session, billing, sub, at)
    session.flush()
    notices.payment_failed(session, billing.store, subscription=sub, order=order)


# --- customer actions -------------------------------------------------------------------


def set_cancel_at_period_end(
    session: Session, billing: Billing, *, sub: Subscription, cancel: bool
) -> Subscription:
    """Cancel at the end of the paid period (``cancel``) or resume a cancellation."""
    sub = _locked_running(session, sub)
    if not cancel and access.ended_by_store(sub):
        raise Conflict(access.end_message(sub), code="subscription_ending")
    sub.canceled_by_customer = cancel
    if sub.cancel_at_period_end == cancel:
        return sub
    with refusal_is_conflict():
        fresh = billing.gateway.set_cancel_at_period_end(
            session, billing, subscription=sub, cancel=cancel
        )
    if fresh is not None:
        # localstripe sends no event for this; Stripe's later event is applied idempotently.
        apply_snapshot(session, billing, sub, fresh, at=utcnow(), fresh=True)
    session.flush()
    return sub


def cancel_now(session: Session, billing: Billing, *, subscription: Subscription) -> Subscription:
    """Stop billing at once (after a full refund); access ends with the paid period."""
    sub = subscription
    if sub.status in FINAL or sub.gateway_ref is None:
        return sub
    try:
        fresh = billing.gateway.cancel_now(session, billing, subscription=sub)
    except GatewayError as exc:
        log.warning("could not cancel subscription %s: %s", sub.gateway_ref, exc)
        return sub
    if fresh is not None:
        apply_snapshot(session, billing, sub, fresh, at=utcnow(), fresh=True)
    return sub


def failed_payment(session: Session, sub: Subscription) -> Order | None:
    """The subscription's newest invoice order, if its payment failed (what "pay now" pays)."""
    newest = session.scalar(
        select(Order)
        .where(Order.subscription_id == sub.id, Order.gateway_ref.is_not(None))
        .order_by(Order.created_at.desc())
        .limit(1)
    )
    return newest if newest is not None and newest.status == "failed" else None


def _locked_running(session: Session, sub: Subscription) -> Subscription:
    """The subscription, locked for this change, refused unless it is running (not ended,
    started)."""
    sub = find_locked(session, sub.gateway, sub.gateway_ref) or sub
    if sub.status in FINAL:
        raise Conflict("This subscription has ended", code="subscription_ended")
    if sub.status == "incomplete":
        raise Conflict("This subscription has not started", code="subscription_incomplete")
    return sub


def _declined(outcome: Outcome, message: str) -> PaymentRequired:
    """A payment the gateway refused, with its reason (``message`` when it gave none)."""
    return PaymentRequired(outcome.message or message, code=outcome.code or "card_declined")


def replace_card(
    session: Session, billing: Billing, *, sub: Subscription, payment: PaymentInput
) -> Subscription:
    """The card the next charges (and a retry) use. A card the gateway declines is refused
    with its reason (402). A card whose bank asks the customer to confirm it (3-D Secure)
    waits in ``pending_setup_ref`` until :func:`complete_card_setup`; until then the old
    card stays."""
    sub = _locked_running(session, sub)
    outcome = billing.gateway.replace_card(session, billing, subscription=sub, payment=payment)
    if outcome.status == "requires_action":
        sub.pending_setup_ref = str(outcome.extra["setup_ref"])
        session.flush()
        return sub
    if outcome.status != "succeeded":
        raise _declined(outcome, "The card was declined.")
    sub.pending_setup_ref = None
    session.flush()
    return sub


def complete_card_setup(
    session: Session,
    billing: Billing,
    *,
    sub: Subscription,
    approve: bool | None = None,
    setup_ref: str | None = None,
) -> Outcome:
    """Finish the card replacement waiting for the bank's confirmation: ``succeeded`` (the
    new card is the subscription's), ``requires_action`` (not confirmed yet: nothing
    changes) or ``failed`` (the old card stays; the pending one is dropped). Idempotent:
    nothing pending answers 409 ``nothing_to_confirm``; ``setup_ref`` (from a webhook) must
    name the pending setup."""
    sub = find_locked(session, sub.gateway, sub.gateway_ref) or sub
    pending = sub.pending_setup_ref
    if pending is None or (setup_ref is not None and setup_ref != pending):
        raise Conflict("No new card is waiting for confirmation", code="nothing_to_confirm")
    with refusal_is_conflict():
        outcome = billing.gateway.complete_card_setup(
            session, billing, subscription=sub, setup_ref=pending, approve=approve
        )
    if outcome.status in ("succeeded", "failed"):
        sub.pending_setup_ref = None
    session.flush()
    return outcome


def pay_now(
    session: Session,
    billing: Billing,
    *,
    sub: Subscription,
    payment: PaymentInput | None = None,
) -> Order:
    """Retry a past-due subscription's failed invoice now (with a new card when given). A
    paid retry goes through the same code as the gateway's invoice.paid event, so the event
    arriving later (or twice) changes nothing more."""
    sub = _locked_running(session, sub)
    order = failed_payment(session, sub)
    if sub.status != "past_due" or order is None:
        raise Conflict("Nothing is due on this subscription", code="nothing_due")
    order = order_service.lock_order(session, order.id)
    if payment is not None and (payment.card_number or payment.payment_method):
        replace_card(session, billing, sub=sub, payment=payment)
        if sub.pending_setup_ref is not None:
            raise PaymentRequired(
                "Your bank asks to confirm this card: replace the card first (you will be "
                "asked to confirm it), then pay",
                code="authentication_required",
            )
    with refusal_is_conflict():
        outcome, invoice = billing.gateway.retry_invoice(
            session, billing, subscription=sub, order=order, payment=payment
        )
    if outcome.status != "succeeded" or invoice is None:
        raise _declined(outcome, "The payment failed.")
    invoice_paid(session, billing, sub, invoice, at=utcnow())
    session.refresh(order)
    return order


# --- the sweep --------------------------------------------------------------------------


def expire_due(session: Session, billing: Billing, now: datetime | None = None) -> dict[str, int]:
    """Suspend entitlements whose grace ran out, expire ended subscriptions, send the gateway
    the end decisions and the recurring tiers' prices it does not have yet (catalog edits
    record them without calling it); with the test gateway also renew (or end)
    subscriptions whose period is over (its demo clock).

    Idempotent: run it from cron (``store billing sweep``); the app also runs it at most once
    a minute per process when billing pages or webhooks are used.
    """
    now = now or utcnow()
    counts = {"renewed": 0, "ended": 0, "priced": 0, "suspended": 0, "expired": 0}
    advance = getattr(billing.gateway, "advance", None)
    if advance is not None:
        counts["renewed"] = advance(session, billing, now)
    counts["ended"] = access.retry_pending(session, billing)
    counts["priced"] = prices.sync_missing(session, billing)
    rows = session.execute(
        select(Subscription, Entitlement)
        .join(Entitlement, Entitlement.id == Subscription.entitlement_id)
        .where(Subscription.status.in_(("past_due", "canceled", "trialing", "active")))
    ).all()
    for sub, entitlement in rows:
        if entitlement.status != "active":
            continue
        if sub.status == "past_due":
            grace = entitlement.grace_until
            if grace is not None and grace <= now:
                entitlements.set_status(
                    session,
                    entitlement=entitlement,
                    status="suspended",
                    reason="Payment past due; the grace period is over",
                    signer=billing.signer,
                )
                notices.suspended(session, billing.store, subscription=sub, entitlement=entitlement)
                counts["suspended"] += 1
        elif (
            (
                sub.status == "canceled"
                or (sub.cancel_at_period_end and entitlement.ends_at is not None)
            )
            and entitlement.ends_at is not None
            and entitlement.ends_at <= now
        ):
            entitlements.set_status(
                session,
                entitlement=entitlement,
                status="expired",
                reason="Subscription ended",
                signer=billing.signer,
            )
            if sub.status == "canceled":
                sub.status = "expired"
            counts["expired"] += 1
    session.flush()
    if billing.store is not None:
        counts.update(notices.send_reminders(session, billing.store, now=now))
    return counts
