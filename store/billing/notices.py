"""Notices by e-mail about payments and subscriptions: receipts (the PDF attached), new
sales, renewals, refunds, failed payments, cancellations, suspension, and the reminders of a
trial's first charge and of a grace period's end. Each is queued in the transaction of the
event that causes it, once per cause (``dedupe_key``: an order, an invoice, a subscription's
period), however often a webhook is delivered or the reminders run; see
``store.mail.notices`` for recipients, settings and categories."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing import sale_notices
from store.billing.models import Order, PlanChange, Subscription
from store.catalog.models import Product
from store.catalog.money import format_money
from store.config import Settings
from store.db import utcnow
from store.mail.notices import day, holders, reachable, send, settings_of, stamp
from store.mail.outbox import Attachment

if TYPE_CHECKING:
    from store.licensing.models import Entitlement

log = logging.getLogger("store.mail")

# How long before a trial's first charge, or the end of a grace period, the reminder goes.
REMINDER_LEAD = timedelta(days=3)


# --- payments -------------------------------------------------------------------------------


def _order_notice(
    session: Session,
    settings: Settings | None,
    order: Order,
    *,
    what: str,
    template: str,
    key: str,
    path: str,
    context: dict[str, Any],
    attachments: Iterable[Attachment] = (),
) -> None:
    """A notice to the buyer of ``order`` about it, with the product's title and a link to
    ``path``; none when mail has no settings, the buyer cannot be reached (disabled,
    deleted) or the product is gone."""
    resolved = settings_of(settings, f"{what} of order {order.id}")
    if resolved is None:
        return
    account = session.get(Account, order.account_id)
    product = session.get(Product, order.product_id)
    if account is None or not reachable(account) or product is None:
        return
    context = {"product": product.title, **context, "url": f"{resolved.public_url}{path}"}
    send(session, resolved, template, [account], key, context, attachments=attachments)


def receipt(
    session: Session,
    settings: Settings | None,
    *,
    order: Order,
    pdf: tuple[str, bytes] | None = None,
) -> None:
    """The receipt of a paid order (a purchase, or a subscription's invoice), with the PDF
    receipt (``(filename, bytes)``, made by billing) attached."""
    _order_notice(
        session,
        settings,
        order,
        what="receipt",
        template="receipt",
        key=f"receipt:{order.id}",
        path=f"/my/purchases/orders/{order.id}/receipt",
        context={
            "amount": format_money(order.total_minor, order.currency),
            "number": order.receipt_number or "",
        },
        attachments=[Attachment(pdf[0], "application/pdf", pdf[1])] if pdf else [],
    )


def order_paid(
    session: Session,
    settings: Settings | None,
    *,
    order: Order,
    pdf: tuple[str, bytes] | None = None,
) -> None:
    """Everything a paid order causes: the buyer's receipt (with ``pdf`` attached), the
    renewal notice when it pays a subscription's later period, and the seller's new-sale
    notice."""
    receipt(session, settings, order=order, pdf=pdf)
    if order.subscription_id is not None:
        earlier = session.scalar(
            select(func.count()).where(
                Order.subscription_id == order.subscription_id,
                Order.paid_at.is_not(None),
                Order.id != order.id,
            )
        )
        sub = session.get(Subscription, order.subscription_id)
        change = session.scalar(select(PlanChange.id).where(PlanChange.order_id == order.id))
        if earlier and sub is not None and change is None:  # a plan change has its own
            renewed(session, settings, subscription=sub, order=order)
    new_sale(session, settings, order=order)


def renewed(
    session: Session, settings: Settings | None, *, subscription: Subscription, order: Order
) -> None:
    resolved = settings_of(settings, f"renewal of subscription {subscription.id}")
    if resolved is None:
        return
    send(
        session,
        resolved,
        "subscription_renewed",
        holders(session, subscription.account_id, subscription.organization_id),
        f"renewed:{order.id}",
        {
            "product": subscription.product.title,
            "amount": format_money(order.total_minor, order.currency),
            "until": day(order.period_end or subscription.current_period_end),
            "url": f"{resolved.public_url}/my/purchases",
        },
        category="renewals",
    )


def new_sale(session: Session, settings: Settings | None, *, order: Order) -> None:
    """To the seller's owners and finance members: a product was bought (mailed now, or
    told in their daily digest: ``store.billing.sale_notices``)."""
    sale_notices.sale_paid(session, settings, order=order)


def refund(session: Session, settings: Settings | None, *, order: Order, amount_minor: int) -> None:
    """A refund was applied to the order (once per cumulative refunded amount)."""
    _order_notice(
        session,
        settings,
        order,
        what="refund",
        template="refund",
        key=f"refund:{order.id}:{order.refunded_minor}",
        path=f"/my/purchases/orders/{order.id}/receipt",
        context={
            "amount": format_money(amount_minor, order.currency),
            "number": order.receipt_number or "",
            "full": order.status == "refunded",
        },
    )


def payment_failed(
    session: Session, settings: Settings | None, *, subscription: Subscription, order: Order
) -> None:
    """A renewal payment failed: access continues through the grace period; update the card.
    One message per failed invoice, whatever the number of events about it."""
    _order_notice(
        session,
        settings,
        order,
        what="failed payment",
        template="payment_failed",
        key=f"payment_failed:{order.id}",
        path="/my/purchases",
        context={
            "amount": format_money(order.total_minor, order.currency),
            "reason": order.failure_reason,
        },
    )


# --- subscriptions --------------------------------------------------------------------------


def plan_changed(session: Session, settings: Settings | None, *, change: PlanChange) -> None:
    """The subscription moved to another tier (once per change)."""
    sub = change.subscription
    resolved = settings_of(settings, f"plan change of subscription {sub.id}")
    if resolved is None:
        return
    if change.due_minor:
        charged = format_money(change.due_minor, change.currency)
        money = f"We charged {charged} for the change."
    elif change.carried_minor:
        carried = format_money(change.carried_minor, change.currency)
        money = f"A credit of {carried} is taken off your next payments."
    else:
        money = "Nothing was charged."
    send(
        session,
        resolved,
        "plan_changed",
        holders(session, sub.account_id, sub.organization_id),
        f"plan-changed:{change.id}",
        {
            "product": sub.product.title,
            "old_tier": change.from_tier.name,
            "tier": change.to_tier.name,
            "date": day(change.changed_at),
            "money": money,
            "until": day(sub.current_period_end),
            "renewal": format_money(sub.amount_minor + sub.tax_minor, sub.currency),
            "url": f"{resolved.public_url}/my/purchases/subscriptions/{sub.id}",
        },
    )


def canceled(session: Session, settings: Settings | None, *, subscription: Subscription) -> None:
    """The subscription was canceled (now, or at the end of the period): once per period."""
    resolved = settings_of(settings, f"cancellation of subscription {subscription.id}")
    if resolved is None:
        return
    send(
        session,
        resolved,
        "subscription_canceled",
        holders(session, subscription.account_id, subscription.organization_id),
        f"canceled:{subscription.id}:{stamp(subscription.current_period_end)}",
        {
            "product": subscription.product.title,
            "until": day(subscription.current_period_end) or day(utcnow()),
            "url": f"{resolved.public_url}/my/purchases",
        },
    )


def trial_ending(session: Session, settings: Settings | None, *, subscription: Subscription) -> int:
    """The trial ends soon and the first charge follows: its amount and date."""
    resolved = settings_of(settings, f"trial reminder of subscription {subscription.id}")
    if resolved is None or subscription.trial_end is None:
        return 0
    return send(
        session,
        resolved,
        "trial_ending",
        holders(session, subscription.account_id, subscription.organization_id),
        f"trial_ending:{subscription.id}:{stamp(subscription.trial_end)}",
        {
            "product": subscription.product.title,
            "amount": format_money(
                subscription.amount_minor + subscription.tax_minor, subscription.currency
            ),
            "date": day(subscription.trial_end),
            "url": f"{resolved.public_url}/my/purchases",
        },
    )


def grace_ending(
    session: Session,
    settings: Settings | None,
    *,
    subscription: Subscription,
    entitlement: Entitlement,
) -> int:
    """The grace period after a failed payment ends soon: access stops then."""
    resolved = settings_of(settings, f"grace reminder of subscription {subscription.id}")
    if resolved is None or entitlement.grace_until is None:
        return 0
    return send(
        session,
        resolved,
        "grace_ending",
        holders(session, subscription.account_id, subscription.organization_id),
        f"grace_ending:{entitlement.id}:{stamp(entitlement.grace_until)}",
        {
            "product": subscription.product.title,
            "date": day(entitlement.grace_until),
            "url": f"{resolved.public_url}/my/purchases",
        },
    )


def suspended(
    session: Session,
    settings: Settings | None,
    *,
    subscription: Subscription,
    entitlement: Entitlement,
) -> None:
    """Access was suspended: the grace period ran out without a payment."""
    resolved = settings_of(settings, f"suspension of subscription {subscription.id}")
    if resolved is None:
        return
    send(
        session,
        resolved,
        "access_suspended",
        holders(session, subscription.account_id, subscription.organization_id),
        f"suspended:{entitlement.id}:{stamp(entitlement.grace_until)}",
        {
            "product": subscription.product.title,
            "url": f"{resolved.public_url}/my/purchases",
        },
    )


def send_reminders(
    session: Session, settings: Settings | None, *, now: datetime | None = None
) -> dict[str, int]:
    """Queue the reminders that are due: trials whose first charge is within three days, and
    grace periods that end within three days. Run it as often as wanted (``store mail
    reminders``, and every billing sweep): each reminder is queued once."""
    from store.licensing.models import Entitlement

    now = now or utcnow()
    counts = {"trial_ending": 0, "grace_ending": 0}
    resolved = settings_of(settings, "reminders")
    if resolved is None:
        return counts
    horizon = now + REMINDER_LEAD
    trials = session.scalars(
        select(Subscription).where(
            Subscription.status == "trialing",
            Subscription.cancel_at_period_end.is_(False),
            Subscription.trial_end > now,
            Subscription.trial_end <= horizon,
        )
    )
    for sub in trials:
        counts["trial_ending"] += trial_ending(session, resolved, subscription=sub)
    graces = session.execute(
        select(Subscription, Entitlement)
        .join(Entitlement, Entitlement.id == Subscription.entitlement_id)
        .where(
            Subscription.status == "past_due",
            Entitlement.status == "active",
            Entitlement.grace_until > now,
            Entitlement.grace_until <= horizon,
        )
    ).all()
    for sub, entitlement in graces:
        counts["grace_ending"] += grace_ending(
            session, resolved, subscription=sub, entitlement=entitlement
        )
    session.flush()
    return counts
