"""Plan changes: a running subscription moves to another monthly or yearly tier of its
product, prorated by ``store.billing.pricing.prorate`` (the one quote).

- What is due now (the new plan for the rest of the period, or a new period when the
  interval changes, less the credit for the unused part of the current one) is charged at
  once as an order of its own, with a receipt for the service period it covers.
- A credit larger than the charge (a downgrade) is taken off the next invoices.
- The entitlement (tier, features, seats, end) and the gateway's subscription follow the
  new tier only once the change is paid, or paid for by the credit; a failed charge leaves
  the old plan in place.
- Idempotent: a request carries a key; the same key answers the first change. The
  subscription's row is locked and at most one change is pending per subscription (a partial
  unique index), so two requests at the same instant, in one process or two, change it once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.billing import coupons, notices, prices
from store.billing import orders as order_service
from store.billing import subscriptions as subs
from store.billing.gateway import GatewayError, PaymentInput, refusal_is_conflict
from store.billing.models import Order, PlanChange, Subscription, TierPrice
from store.billing.pricing import BillingKind, Buyer, Interval, Proration, TaxTable, prorate
from store.billing.runtime import Billing
from store.catalog.models import Tier
from store.db import utcnow
from store.errors import Conflict, StoreError, ValidationFailed
from store.licensing import entitlements
from store.licensing.models import Entitlement

log = logging.getLogger("store.billing")

_KEY = re.compile(r"^[A-Za-z0-9_.:-]{8,80}$")


@dataclass(frozen=True)
class Option:
    """A tier the subscription can move to, with what moving now costs."""

    tier: Tier
    proration: Proration


# --- checks -------------------------------------------------------------------------------


def check_state(sub: Subscription) -> None:
    """Only a running, paid-up subscription changes plan (409 otherwise)."""
    if sub.status in subs.FINAL:
        raise Conflict("This subscription has ended", code="subscription_ended")
    if sub.status == "incomplete":
        raise Conflict("This subscription has not started", code="subscription_incomplete")
    if sub.status == "past_due":
        raise Conflict(
            "A payment of this subscription is due: pay it first, then change the plan",
            code="pay_first",
        )
    if sub.status == "trialing":
        raise Conflict(
            "The plan can be changed once the trial has ended and the first payment is made",
            code="trialing",
        )
    if sub.end_requested == "now":
        raise Conflict("This subscription is being ended", code="subscription_ending")
    if sub.current_period_end is None or sub.current_period_end <= utcnow():
        raise Conflict(
            "This subscription's period is over; it changes plan once renewed",
            code="period_over",
        )


def check_target(sub: Subscription, tier: Tier) -> None:
    """The tier must be another paid, recurring, available tier of the same product (422)."""
    if tier.product_id != sub.product_id:
        raise ValidationFailed(
            "Choose a tier of the same product", code="other_product", field="tier"
        )
    if tier.id == sub.tier_id:
        raise ValidationFailed("This is your plan already", code="same_plan", field="tier")
    kind = BillingKind(tier.billing)
    if not kind.paid:
        raise ValidationFailed(
            "This tier is free: cancel the subscription instead (access runs to the end of "
            "the paid period)",
            code="tier_is_free",
            field="tier",
        )
    if not kind.recurring:
        raise ValidationFailed(
            "This tier is bought once: buy it after the subscription ends",
            code="target_not_recurring",
            field="tier",
        )
    if not tier.active or tier.product.status != "published":
        raise ValidationFailed("This tier is not available", code="tier_unavailable", field="tier")
    if tier.currency.lower() != sub.currency.lower():
        raise ValidationFailed(
            f"This tier is priced in {tier.currency.upper()}; the subscription is in "
            f"{sub.currency.upper()}",
            code="currency_change",
            field="tier",
        )
    if sub.quantity != 1 and tier.seats is None:
        raise ValidationFailed(
            f"You pay for {sub.quantity} units; this tier is sold one at a time",
            code="quantity_not_per_seat",
            field="tier",
        )


def normalize_key(session: Session, key: str | None, sub: Subscription, tier: Tier) -> str:
    """The request's idempotency key; without one, a key derived from the subscription's
    state, its changes so far and the target (a repeated request then finds the plan
    changed: ``same_plan``; after a failed change a new attempt is made)."""
    if key is not None and key.strip():
        text = key.strip()
        if not _KEY.match(text):
            raise ValidationFailed(
                "An idempotency key has 8 to 80 letters, digits and . _ : -",
                code="bad_idempotency_key",
                field="key",
            )
        return text
    stamp = sub.current_period_end.isoformat() if sub.current_period_end else ""
    made = session.scalar(
        select(func.count()).select_from(PlanChange).where(PlanChange.subscription_id == sub.id)
    )
    raw = f"{sub.id}:{sub.tier_id}:{tier.id}:{stamp}:{sub.paid_charges}:{made}"
    return "auto-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


# --- pricing ------------------------------------------------------------------------------


def _period_start(session: Session, sub: Subscription) -> datetime:
    assert sub.current_period_end is not None
    if sub.current_period_start is not None and sub.current_period_start < sub.current_period_end:
        return sub.current_period_start
    # Subscriptions from before the start was recorded: the paid invoice of this period.
    start = session.scalar(
        select(Order.period_start)
        .where(
            Order.subscription_id == sub.id,
            Order.period_end == sub.current_period_end,
            Order.paid_at.is_not(None),
            Order.period_start.is_not(None),
        )
        .order_by(Order.period_start)
        .limit(1)
    )
    if start is not None and start < sub.current_period_end:
        return start
    return Interval(sub.interval).add(sub.current_period_end, -1)


def proration(
    session: Session, billing: Billing, sub: Subscription, tier: Tier, when: datetime | None = None
) -> Proration:
    """What moving ``sub`` to ``tier`` at ``when`` costs (nothing is changed)."""
    check_state(sub)
    check_target(sub, tier)
    when = when or utcnow()
    assert sub.current_period_end is not None
    label = billing.settings.tax_label
    # What this period was charged at: the quote of its charge, coupon included if it had it.
    current = coupons.charge_quote(sub, charge_index=max(0, sub.paid_charges - 1), tax_label=label)
    target_interval = BillingKind(tier.billing).interval
    index = (
        sub.paid_charges if target_interval is not Interval(sub.interval) else sub.paid_charges - 1
    )
    coupon = None
    if sub.coupon is not None and sub.coupon.tier_id in (None, tier.id):
        terms = coupons.terms(sub.coupon)
        if terms.covers(max(0, index), target_interval):
            coupon = terms
    taxes = TaxTable(default_rate=Decimal(sub.tax_rate or "0"), label=label)
    return prorate(
        current,
        tier,
        period_start=_period_start(session, sub),
        period_end=sub.current_period_end,
        when=when,
        buyer=Buyer(trial_eligible=False),
        coupon=coupon,
        quantity=sub.quantity,
        taxes=taxes,
    )


def options(session: Session, billing: Billing, sub: Subscription) -> list[Option]:
    """The tiers the subscription can move to now, each with its prorated price (empty when
    the subscription cannot change plan)."""
    try:
        check_state(sub)
    except Conflict:
        return []
    found = []
    for tier in sorted(sub.product.tiers, key=lambda t: (t.billing, t.amount_minor)):
        try:
            found.append(Option(tier, proration(session, billing, sub, tier)))
        except ValidationFailed:
            continue
    return found


# --- the change ---------------------------------------------------------------------------


def find(session: Session, sub: Subscription, key: str) -> PlanChange | None:
    return session.scalar(
        select(PlanChange)
        .where(PlanChange.subscription_id == sub.id, PlanChange.key == key)
        .execution_options(populate_existing=True)
    )


def changes_of(session: Session, sub: Subscription) -> list[PlanChange]:
    return list(
        session.scalars(
            select(PlanChange)
            .where(PlanChange.subscription_id == sub.id)
            .order_by(PlanChange.created_at.desc())
        )
    )


def change_plan(
    session: Session,
    billing: Billing,
    *,
    sub: Subscription,
    tier: Tier,
    actor: Account,
    key: str | None = None,
    payment: PaymentInput | None = None,
) -> PlanChange:
    """:func:`start` and :func:`complete` in one transaction (scripts and tests; pages and
    the API commit the pending change between the two, as checkout does)."""
    change = start(session, billing, sub=sub, tier=tier, actor=actor, key=key)
    return complete(session, billing, change=change, payment=payment)


def start(
    session: Session,
    billing: Billing,
    *,
    sub: Subscription,
    tier: Tier,
    actor: Account,
    key: str | None = None,
) -> PlanChange:
    """Record the change of ``sub`` to ``tier`` as ``pending``, priced now, with the order of
    what is due. The same ``key`` answers the change made with it (whatever its status).
    Commit it before :func:`complete`: a change the gateway charged is then never lost (a
    stale pending change is completed by ``store billing reconcile``)."""
    locked = subs.find_locked(session, sub.gateway, sub.gateway_ref, str(sub.id))
    sub = locked or sub
    key = normalize_key(session, key, sub, tier)
    existing = find(session, sub, key)
    if existing is not None:
        if existing.to_tier_id != tier.id:
            raise Conflict(
                "This idempotency key was used for a change to another tier",
                code="idempotency_key_reused",
            )
        return existing
    quote = proration(session, billing, sub, tier)
    price = prices.ensure_price(session, billing, tier)
    change = PlanChange(
        subscription_id=sub.id,
        key=key,
        account_id=actor.id,
        from_tier_id=sub.tier_id,
        to_tier_id=tier.id,
        to_price_id=price.id,
        status="pending",
        currency=quote.currency,
        credit_net_minor=quote.credit_net_minor,
        credit_tax_minor=quote.credit_tax_minor,
        charge_net_minor=quote.charge_net_minor,
        charge_tax_minor=quote.charge_tax_minor,
        due_net_minor=quote.due_now_net_minor,
        due_tax_minor=quote.due_now_tax_minor,
        carried_net_minor=quote.carried_net_minor,
        carried_tax_minor=quote.carried_tax_minor,
        interval_change=quote.interval_change,
        changed_at=quote.when,
        period_end=quote.new_period_end,
    )
    try:
        with session.begin_nested():
            session.add(change)
            session.flush()
    except IntegrityError:
        # The same key, or another change of this subscription, got there first.
        existing = find(session, sub, key)
        if existing is not None:
            return existing
        raise Conflict(
            "Another change of this plan is in progress", code="change_in_progress"
        ) from None
    if quote.due_now_minor > 0:
        order = _order_for(sub, change)
        session.add(order)
        session.flush()
        change.order_id = order.id
        session.flush()
    return change


def _order_for(sub: Subscription, change: PlanChange) -> Order:
    """The pending order of what ``change`` charges now, from the amounts the change
    recorded (taxed as the subscription is), for the period from the change to the new
    period's end."""
    return Order(
        account_id=sub.account_id,
        organization_id=sub.organization_id,
        tier_id=change.to_tier_id,
        product_id=sub.product_id,
        tier_price_id=change.to_price_id,
        subscription_id=sub.id,
        kind="subscription",
        amount_minor=change.due_net_minor,
        tax_minor=change.due_tax_minor,
        quantity=sub.quantity,
        tax_rate=sub.tax_rate,
        tax_country=sub.tax_country,
        vat_id=sub.vat_id,
        reverse_charge=sub.reverse_charge,
        currency=change.currency,
        status="pending",
        gateway=sub.gateway,
        period_start=change.changed_at,
        period_end=change.period_end,
    )


def _lock_change(session: Session, change_id: uuid.UUID) -> PlanChange:
    found = session.scalar(
        select(PlanChange)
        .where(PlanChange.id == change_id)
        .with_for_update(of=PlanChange)
        .execution_options(populate_existing=True)
    )
    assert found is not None
    return found


def _fail(session: Session, change: PlanChange, reason: str, code: str) -> PlanChange:
    change.status = "failed"
    change.failure_reason = reason[:500]
    change.failure_code = code[:64]
    if change.order is not None:
        order_service.mark_failed(session, change.order, reason=reason)
    session.flush()
    log.info("plan change %s failed: %s", change.id, reason)
    return change


def complete(
    session: Session,
    billing: Billing,
    *,
    change: PlanChange,
    payment: PaymentInput | None = None,
) -> PlanChange:
    """Charge and apply a pending change (see the module docstring): ``applied``, or
    ``failed`` with its reason (the old plan stays). A change that is no longer pending is
    answered as it is, so completing twice charges once (the gateway's requests carry keys
    derived from the change's key, so a retry after a crash reuses what was made)."""
    sub = change.subscription
    sub = subs.find_locked(session, sub.gateway, sub.gateway_ref, str(sub.id)) or sub
    change = _lock_change(session, change.id)
    if change.status != "pending":
        return change
    if sub.tier_id != change.from_tier_id or sub.status in subs.FINAL or sub.status == "past_due":
        return _fail(
            session,
            change,
            "The subscription changed before the plan change was made",
            "subscription_changed",
        )
    if utcnow() >= change.period_end:
        return _fail(
            session, change, "The period this change was priced for is over", "period_over"
        )
    tier = change.to_tier
    price = session.get(TierPrice, change.to_price_id) if change.to_price_id else None
    if price is None:
        price = prices.ensure_price(session, billing, tier)
    order = change.order
    with refusal_is_conflict():
        outcome = billing.gateway.change_plan(
            session, billing, subscription=sub, change=change, order=order, price=price,
            payment=payment or PaymentInput(),
        )  # fmt: skip
    if outcome.status != "succeeded":
        if order is not None and outcome.payment_ref and order.payment_ref is None:
            order.payment_ref = outcome.payment_ref
        return _fail(
            session,
            change,
            outcome.message or "The payment failed.",
            outcome.code or "payment_failed",
        )
    if outcome.subscription_ref and outcome.subscription_ref != sub.gateway_ref:
        # The gateway started a new subscription (and canceled the old one).
        change.replaced_gateway_ref = sub.gateway_ref
        sub.gateway_ref = outcome.subscription_ref
    if order is not None:
        order.gateway_ref = order.gateway_ref or outcome.invoice_ref or outcome.payment_ref
        charged = outcome.extra.get("charged")
        if charged is not None and tuple(charged) != (order.total_minor, order.tax_minor):
            # Recorded from what the gateway charged (its tax per invoice line).
            total, tax = charged
            log.warning(
                "plan change %s charged %s (tax %s); computed %s (tax %s)",
                change.id, total, tax, order.total_minor, order.tax_minor,
            )  # fmt: skip
            order.amount_minor, order.tax_minor = max(0, total - tax), max(0, tax)
    _apply(session, billing, sub, change, tier, price.id, order, outcome.payment_ref)
    return change


STALE_AFTER = timedelta(minutes=10)


def complete_stale(
    session: Session, billing: Billing, *, now: datetime | None = None
) -> list[tuple[PlanChange, str]]:
    """Changes left ``pending`` for ``STALE_AFTER`` (the process making them stopped between
    recording and completing): complete them now (``store billing reconcile``). Answers each
    with its status, or the error that kept it pending."""
    now = now or utcnow()
    stale = session.scalars(
        select(PlanChange)
        .join(Subscription, Subscription.id == PlanChange.subscription_id)
        .where(
            PlanChange.status == "pending",
            PlanChange.created_at <= now - STALE_AFTER,
            Subscription.gateway == billing.gateway.name,
        )
        .order_by(PlanChange.created_at)
    ).all()
    done = []
    for change in stale:
        try:
            with session.begin_nested():
                result = complete(session, billing, change=change)
            done.append((result, result.status))
        except StoreError as exc:
            done.append((change, f"error: {exc.detail}"))
    return done


def _apply(
    session: Session,
    billing: Billing,
    sub: Subscription,
    change: PlanChange,
    tier: Tier,
    price_id: object,
    order: Order | None,
    payment_ref: str | None,
) -> None:
    """The change is paid: the subscription, its entitlement and its next charge follow."""
    now = utcnow()
    sub.tier_id = tier.id
    sub.tier = tier
    sub.tier_price_id = price_id  # type: ignore[assignment]
    interval = BillingKind(tier.billing).interval
    assert interval is not None
    sub.interval = interval
    sub.record_terms(tier)  # the new plan's terms, as they are when the change applies
    if change.interval_change:
        sub.current_period_start = change.changed_at
        sub.current_period_end = change.period_end
        sub.paid_charges += 1  # a new period was charged
    sub.credit_net_minor += change.carried_net_minor
    sub.credit_tax_minor += change.carried_tax_minor
    upcoming = coupons.set_next_charge(sub, tax_label=billing.settings.tax_label)
    if upcoming.discount_minor > 0:
        # The coupon's line for the next invoice, for the new plan (Stripe: a pending item).
        try:
            billing.gateway.discount_next_charge(session, billing, subscription=sub, quote=upcoming)
        except GatewayError as exc:
            log.error(
                "plan change %s: the next invoice's discount was not made: %s", change.id, exc
            )
    entitlement = session.get(Entitlement, sub.entitlement_id) if sub.entitlement_id else None
    if entitlement is not None:
        entitlement.tier_id = tier.id
        entitlement.tier = tier
        entitlement.features = sub.bought_features
        entitlement.seats = entitlements.seats_for(sub.unit_seats, sub.quantity)
        entitlement.reason = f"Plan changed to {tier.name}"
        # A new period from now (interval change) sets the end; else the period is the same.
        ends_at = change.period_end if change.interval_change else entitlement.ends_at
        entitlements.extend(
            session,
            entitlement=entitlement,
            ends_at=ends_at,
            grace_until=entitlement.grace_until,
            signer=billing.signer,
        )
    change.status = "applied"
    change.applied_at = now
    session.flush()
    if order is not None and order_service.mark_paid(
        session, order, paid_at=now, payment_ref=payment_ref, entitlement=entitlement
    ):
        order_service.notify_paid(session, billing, order)
    notices.plan_changed(session, billing.store, change=change)
    session.flush()
