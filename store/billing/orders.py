"""Orders: checkout, and what payment events do to an order and its entitlement.

A checkout creates the order (and, for recurring tiers, its subscription) and asks the
gateway to charge. The order becomes ``paid`` (and the entitlement active) only when the
payment event arrives: Stripe's webhook, or the test gateway's event of the same shape.
States only move forward (see ``RANK``), so a late or repeated event never undoes a newer one.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.audit import service as audit
from store.billing import coupons, ownership, shapes, trials
from store.billing.gateway import GatewayError, Outcome, PaymentInput
from store.billing.models import Coupon, Order, Refund, Subscription
from store.billing.prices import ensure_price
from store.billing.pricing import Buyer, Quote, Shown, refund_tax
from store.billing.runtime import Billing
from store.catalog.models import Tier
from store.catalog.money import format_money
from store.db import utcnow
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from store.licensing import entitlements
from store.licensing.models import Entitlement

log = logging.getLogger("store.billing")

RANK = {
    "pending": 0,
    "requires_action": 1,
    "failed": 2,
    "review": 3,  # paid, but not what was quoted: held until an administrator decides
    "paid": 4,
    "partially_refunded": 5,
    "refunded": 6,
}
GATEWAY_UNAVAILABLE = "gateway_unavailable"


# --- checkout -------------------------------------------------------------------------


def record_quote(row: Order | Subscription, quote: Quote, buyer: Buyer | None) -> None:
    """Copy the quote's terms and the buyer's tax details onto an order or subscription."""
    row.quantity = quote.quantity
    row.tax_rate = format(quote.tax_rate, "f")
    row.reverse_charge = quote.reverse_charge
    row.tax_country = buyer.country if buyer else None
    row.vat_id = buyer.vat_id if buyer else None


def check_quantity(tier: Tier, quantity: int) -> None:
    """Seats are bought by quantity only where a tier has a seat limit (each unit is that
    many seats); other tiers are bought one at a time."""
    if quantity != 1 and tier.seats is None:
        raise ValidationFailed(
            "This tier has no seat limit: buy one", code="quantity_not_per_seat", field="quantity"
        )


def start_checkout(
    session: Session,
    billing: Billing,
    *,
    account: Account,
    tier: Tier,
    org: Organization | None = None,
    buyer: Buyer | None = None,
    coupon_code: str | None = None,
    quantity: int = 1,
    shown: Shown | None = None,
) -> Order:
    """Create a pending order (and an incomplete subscription for recurring tiers) for what
    :func:`store.billing.pricing.quote` says the buyer pays, with the coupon ``coupon_code``
    of the product when one is given (one of its redemptions is held for the order).

    ``shown`` is the price the buyer saw (the checkout page, a quote): when the quote now
    differs (the tier's price was edited, a trial no longer applies) nothing is ordered and
    :class:`PriceChanged` names the new price.

    The caller commits before calling :func:`pay`, so events that arrive while the gateway is
    still answering find the order.
    """
    if account.deleted_at is not None or not account.is_active:
        raise Forbidden("A deleted or disabled account buys nothing", code="account_inactive")
    product = tier.product
    if product.status != "published" or not tier.active:
        raise NotFound("This tier is not available")
    if tier.is_free:
        raise ValidationFailed("This tier is free: use its Get button", code="tier_is_free")
    check_quantity(tier, quantity)
    if not billing.test_mode:  # the test gateway takes no money: nothing to protect
        accounts.require_verified_email(account, "buying")
    if org is not None:
        accounts.require_role(session, account, org, "owner")
    key = ownership.holder_key(account, org)
    ownership.lock_holder(session, account, org)
    existing = ownership.open_purchase(session, key, product.id)
    if existing is not None and not ownership.close_if_abandoned(session, billing, existing):
        raise ownership.already_owned(existing)
    eligible = trials.eligible(session, account=account, product=product, org=org)
    buyer = replace(buyer or Buyer(), trial_eligible=eligible)
    coupon = None
    if coupon_code is not None and coupon_code.strip():
        coupon = coupons.for_checkout(session, code=coupon_code, tier=tier, account=account)
    terms = coupons.terms(coupon) if coupon is not None else None
    quote = billing.quote(tier, buyer, terms, quantity, utcnow())
    if shown is not None and not shown.matches(quote):
        raise PriceChanged(quote)
    try:
        with session.begin_nested():
            order = _create_checkout(
                session, billing, account, tier, org, buyer, quote, key, coupon
            )
            if coupon is not None:
                redemption = coupons.claim(session, coupon=coupon, account=account)
                redemption.order_id = order.id
                session.flush()
            return order
    except IntegrityError:
        # Another checkout of this holder and product won the race (the partial unique
        # indexes of store.billing.ownership).
        existing = ownership.open_purchase(session, key, product.id)
        if existing is None:
            raise
        raise ownership.already_owned(existing) from None


class PriceChanged(Conflict):
    """The price is not the one the buyer was shown: nothing was ordered or charged."""

    code = "price_changed"

    def __init__(self, quote: Quote) -> None:
        price = format_money(quote.total_minor, quote.currency)
        if quote.interval is not None:
            price += f" per {quote.interval}"
        if quote.due_now_minor != quote.total_minor:
            price += f", {format_money(quote.due_now_minor, quote.currency)} today"
        super().__init__(
            f"The price changed since it was shown: it is now {price}. Nothing was charged; "
            "check the new price and pay again."
        )


def _create_checkout(
    session: Session,
    billing: Billing,
    account: Account,
    tier: Tier,
    org: Organization | None,
    buyer: Buyer | None,
    quote: Quote,
    key: uuid.UUID,
    coupon: Coupon | None = None,
) -> Order:
    product = tier.product
    price = ensure_price(session, billing, tier)
    subscription = None
    if quote.interval is not None:
        subscription = Subscription(
            account_id=account.id,
            organization_id=org.id if org else None,
            tier_id=tier.id,
            product_id=product.id,
            tier_price_id=price.id,
            amount_minor=quote.net_minor,
            tax_minor=quote.tax_minor,
            discount_minor=quote.discount_minor,
            currency=quote.currency,
            interval=quote.interval,
            trial_days=quote.trial_days,
            holder_key=key,
            status="incomplete",
            gateway=billing.gateway.name,
            coupon_id=coupon.id if coupon else None,
            coupon_code=coupon.code if coupon else None,
        )
        record_quote(subscription, quote, buyer)
        subscription.record_terms(tier)
        session.add(subscription)
        session.flush()
        if quote.trial:
            trials.claim(
                session, account=account, product=product, subscription=subscription, org=org
            )
    order = Order(
        account_id=account.id,
        organization_id=org.id if org else None,
        tier_id=tier.id,
        product_id=product.id,
        tier_price_id=price.id,
        subscription_id=subscription.id if subscription else None,
        kind="subscription" if quote.recurring else "one_time",
        holder_key=key,
        amount_minor=quote.due_now_net_minor,
        tax_minor=quote.due_now_tax_minor,
        discount_minor=0 if quote.trial else quote.discount_minor,
        currency=quote.currency,
        status="pending",
        gateway=billing.gateway.name,
        coupon_id=coupon.id if coupon else None,
        coupon_code=coupon.code if coupon and not quote.trial else None,
    )
    record_quote(order, quote, buyer)
    order.record_terms(tier)
    session.add(order)
    session.flush()
    return order


def pay(session: Session, billing: Billing, *, order: Order, payment: PaymentInput) -> Outcome:
    """Ask the gateway to charge for a pending order; records what it answered at once.

    Only failures are final here; success waits for the payment event.
    """
    order = lock_order(session, order.id)
    if order.status != "pending" or order.gateway_ref is not None:
        raise Conflict("This order was already paid for or attempted", code="order_not_pending")
    gateway = billing.gateway
    try:
        if order.kind == "one_time":
            outcome = gateway.pay_once(session, billing, order=order, payment=payment)
        else:
            sub = lock_subscription(session, order.subscription_id)
            assert sub is not None
            price = ensure_price(session, billing, order.tier)
            outcome = gateway.subscribe(
                session,
                billing,
                subscription=sub,
                order=order,
                account=order.account,
                price=price,
                payment=payment,
            )
            if outcome.subscription_ref and sub.gateway_ref is None:
                sub.gateway_ref = outcome.subscription_ref
    except GatewayError as exc:
        log.warning("gateway error for order %s: %s", order.id, exc)
        outcome = Outcome(
            status="failed",
            message="The payment service could not be reached.",
            code=GATEWAY_UNAVAILABLE,
        )
    session.flush()
    if outcome.payment_ref and order.payment_ref is None:
        order.payment_ref = outcome.payment_ref
    ref = outcome.payment_ref if order.kind == "one_time" else outcome.invoice_ref
    if ref and order.gateway_ref is None:
        order.gateway_ref = ref
    if outcome.status == "failed":
        mark_failed(session, order, reason=outcome.message or "The payment failed.")
        sub = order.subscription
        if sub is not None and sub.status == "incomplete":
            sub.status, sub.canceled_at = "canceled", utcnow()
        if sub is not None:
            trials.release(session, sub)
    elif outcome.status == "requires_action" and order.status == "pending":
        order.status = "requires_action"
    session.flush()
    return outcome


# --- loading --------------------------------------------------------------------------


def lock_order(session: Session, order_id: uuid.UUID) -> Order:
    """The order, its row locked for this transaction (PostgreSQL; SQLite serialises writes)."""
    order = session.scalar(
        select(Order)
        .where(Order.id == order_id)
        .with_for_update(of=Order)
        .execution_options(populate_existing=True)
    )
    if order is None:
        raise NotFound("No such order")
    return order


def lock_subscription(session: Session, sub_id: uuid.UUID | None) -> Subscription | None:
    if sub_id is None:
        return None
    return session.scalar(
        select(Subscription)
        .where(Subscription.id == sub_id)
        .with_for_update(of=Subscription)
        .execution_options(populate_existing=True)
    )


def get_order(session: Session, order_id: uuid.UUID) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise NotFound("No such order")
    return order


def get_visible_order(session: Session, order_id: uuid.UUID, account: Account) -> Order:
    """The order if this account placed it or administers the store; NotFound otherwise."""
    order = get_order(session, order_id)
    if order.account_id != account.id and not account.is_admin:
        raise NotFound("No such order")
    return order


def orders_of(session: Session, account: Account) -> list[Order]:
    return list(
        session.scalars(
            select(Order).where(Order.account_id == account.id).order_by(Order.created_at.desc())
        )
    )


def find_order_by_payment(session: Session, gateway: str, payment_ref: str) -> Order | None:
    return session.scalars(
        select(Order)
        .where(
            Order.gateway == gateway,
            (Order.payment_ref == payment_ref) | (Order.gateway_ref == payment_ref),
        )
        .order_by(Order.created_at)
        .limit(1)
    ).first()


# --- what payment events do -----------------------------------------------------------


def mark_paid(
    session: Session,
    order: Order,
    *,
    paid_at: datetime,
    payment_ref: str | None = None,
    entitlement: Entitlement | None = None,
) -> bool:
    """Order paid; a one-time order gets its perpetual entitlement. False if it already was."""
    if payment_ref and order.payment_ref is None:
        order.payment_ref = payment_ref
    if RANK[order.status] >= RANK["paid"] or order.status == "review":
        return False
    order.status = "paid"
    order.failure_reason = ""
    order.paid_at = paid_at
    coupons.confirm(session, order)
    from store.billing import receipts

    organization = order.product.organization
    order.receipt_number = receipts.next_number(session, organization.id, organization.slug)
    if entitlement is None and order.kind == "one_time" and order.entitlement_id is None:
        entitlement = entitlements.create_entitlement(
            session,
            tier=order.tier,
            source="order",
            account=order.account if order.organization_id is None else None,
            org=order.organization,
            source_ref=str(order.id),
            starts_at=paid_at,
            reason=f"Order {order.receipt_number}",
            quantity=order.quantity,
            unit_seats=order.unit_seats,
            features=order.bought_features,
        )
    if entitlement is not None:
        order.entitlement_id = entitlement.id
    session.flush()
    if order.refunded_minor:  # refunds told before the payment: applied now
        _refunded(session, order)
    return True


def hold_for_review(
    session: Session, order: Order, *, payment_ref: str | None, reason: str
) -> bool:
    """A payment whose amount or currency is not the order's quote: never fulfilled; the
    order goes to ``review`` and administrators are alerted (log and audit event)."""
    if order.payment_ref is None:
        order.payment_ref = payment_ref
    if RANK[order.status] >= RANK["review"]:
        return False
    order.status = "review"
    order.failure_reason = reason[:500]
    log.error("order %s held for review: %s", order.id, reason)
    audit.record(
        session,
        action="order.review",
        target=order,
        org=order.product.organization_id,
        details={"reason": reason, "payment_ref": payment_ref},
    )
    session.flush()
    return True


def mark_failed(session: Session, order: Order, *, reason: str) -> bool:
    """The payment failed (or its checkout was given up): a coupon it held is released."""
    if RANK[order.status] >= RANK["failed"]:
        return False
    order.status = "failed"
    order.failure_reason = reason[:500]
    coupons.release(session, order)
    session.flush()
    return True


def mark_requires_action(session: Session, order: Order) -> bool:
    if order.status != "pending":
        return False
    order.status = "requires_action"
    session.flush()
    return True


def _order_entitlement(session: Session, order: Order) -> Entitlement | None:
    if order.entitlement_id is None:
        return None
    return session.get(Entitlement, order.entitlement_id)


def apply_refund(session: Session, order: Order, *, refunded_total: int, at: datetime) -> bool:
    """The payment's cumulative refunded amount is now ``refunded_total`` (never decreases).

    A full refund revokes the entitlement (and so its licenses); a partial one keeps it.
    A refund told before the payment (the gateway's events arrive in any order) is kept
    and applied when the payment is (:func:`mark_paid`); False then, as nothing changed
    for the buyer yet.
    """
    new_total = min(max(order.refunded_minor, refunded_total), order.total_minor)
    if new_total <= order.refunded_minor:
        return False
    # The tax part of refunds so far, proportional to the order's; its steps add up exactly.
    tax_before = refund_tax(order.refunded_minor, order.total_minor, order.tax_minor)
    tax_after = refund_tax(new_total, order.total_minor, order.tax_minor)
    session.add(
        Refund(
            order_id=order.id,
            amount_minor=new_total - order.refunded_minor,
            tax_minor=tax_after - tax_before,
            created_at=at,
        )
    )
    order.refunded_minor = new_total
    order.refunded_at = at
    if order.paid_at is None:
        session.flush()
        return False
    _refunded(session, order)
    return True


def _refunded(session: Session, order: Order) -> None:
    """A paid order's state after its refunds: a full refund revokes the entitlement."""
    if order.refunded_minor >= order.total_minor:
        order.status = "refunded"
        entitlement = _order_entitlement(session, order)
        if entitlement is not None:
            entitlements.revoke(
                session,
                entitlement=entitlement,
                actor=None,
                reason=f"Order {order.receipt_number} refunded",
            )
    else:
        order.status = "partially_refunded"
    session.flush()


# --- refunds ---------------------------------------------------------------------------


def may_refund(session: Session, billing: Billing, actor: Account, order: Order) -> bool:
    """Administrators refund any order; owners of the selling organization their own sales,
    within ``STORE_BILLING_PUBLISHER_REFUND_DAYS`` of the payment."""
    if actor.is_admin:
        return True
    days = billing.settings.publisher_refund_days
    if days <= 0 or order.paid_at is None:
        return False
    if not accounts.has_role(session, actor, order.product.organization, "owner"):
        return False
    return utcnow() - order.paid_at <= timedelta(days=days)


def get_refundable_order(
    session: Session, billing: Billing, order_id: uuid.UUID, actor: Account
) -> Order:
    """The order for administrators and the seller's owners (who may refund it, within
    their window); Forbidden for its buyer, NotFound for anyone else."""
    order = get_order(session, order_id)
    if accounts.has_role(session, actor, order.product.organization, "owner"):
        return order
    if order.account_id == actor.id:
        raise Forbidden("Only administrators and the seller's owners refund orders")
    raise NotFound("No such order")


def refund(
    session: Session,
    billing: Billing,
    *,
    actor: Account,
    order: Order,
    amount_minor: int | None = None,
) -> Order:
    """Refund all or part of a paid order at the gateway (see :func:`may_refund`).

    The refund is applied when the gateway confirms it (its answer, or the refund event,
    whichever comes first; both apply the same cumulative amount). A full refund of a
    subscription payment also cancels the subscription at once (store.billing.access).
    """
    order = lock_order(session, order.id)
    if not may_refund(session, billing, actor, order):
        if order.paid_at is not None and accounts.has_role(
            session, actor, order.product.organization, "owner"
        ):
            raise Forbidden(
                "The refund window for publishers is over for this order",
                code="refund_window_over",
            )
        raise Forbidden("Only administrators and the seller's owners refund orders")
    if order.status not in ("paid", "partially_refunded"):
        raise Conflict(f"A {order.status.replace('_', ' ')} order cannot be refunded")
    refundable = order.refundable_minor
    amount = refundable if amount_minor is None else amount_minor
    if not 0 < amount <= refundable:
        raise ValidationFailed(
            f"The amount must be between 1 and {refundable} (minor units)", field="amount_minor"
        )
    try:
        if order.payment_ref is None and order.kind == "subscription" and order.gateway_ref:
            # An invoice told without its payment (Stripe's newer API shape): asked now.
            invoice = {"id": order.gateway_ref}
            order.payment_ref = shapes.invoice_payment(billing, invoice, required=True)
        total = billing.gateway.refund(session, billing, order=order, amount_minor=amount)
    except GatewayError as exc:
        raise Conflict(
            f"The payment service refused the refund: {exc}", code="refund_failed"
        ) from exc
    session.flush()
    before = order.refunded_minor
    if total is not None and apply_refund(session, order, refunded_total=total, at=utcnow()):
        from store.billing import notices

        notices.refund(
            session, billing.store, order=order, amount_minor=order.refunded_minor - before
        )
    from store.billing import access

    access.after_refund(session, billing, order)
    session.flush()
    record_refund(session, order, amount_minor=amount, actor=actor)
    return order


def record_refund(
    session: Session,
    order: Order,
    *,
    amount_minor: int,
    actor: Account | None = None,
    reason: str | None = None,
) -> None:
    """The audit log's entry of a refund (by ``actor``, or by the store itself with the
    ``reason`` it refunded for)."""
    details: dict[str, object] = {"amount_minor": amount_minor, "currency": order.currency}
    if reason is not None:
        details["reason"] = reason
    details["status"] = order.status
    audit.record(
        session,
        action="order.refund",
        actor=actor,
        target=order,
        org=order.product.organization_id,
        details=details,
    )


def sales_orders(session: Session, actor: Account, org: Organization) -> list[Order]:
    """The paid orders of the organization's products, newest first (its owners, its
    finance role, admins; refunds stay with owners: ``may_refund``)."""
    accounts.require_revenue(session, actor, org)
    from store.catalog.models import Product

    return list(
        session.scalars(
            select(Order)
            .join(Product, Product.id == Order.product_id)
            .where(Product.organization_id == org.id, Order.paid_at.is_not(None))
            .order_by(Order.paid_at.desc())
            .limit(500)
        )
    )


def notify_paid(session: Session, billing: Billing, order: Order) -> None:
    """Queue what a payment causes by e-mail: the receipt with its PDF, a renewal notice,
    the seller's new-sale notice (each once per order, store.mail.notices)."""
    from store.billing import notices, receipts

    pdf = None
    if billing.store is not None:
        pdf = receipts.pdf_file(
            order, tax_label=billing.settings.tax_label, store_url=billing.store.public_url
        )
    notices.order_paid(session, billing.store, order=order, pdf=pdf)
    if order.refunded_minor:  # refunded before its payment was told
        notices.refund(session, billing.store, order=order, amount_minor=order.refunded_minor)
