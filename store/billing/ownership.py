"""What a holder already has of a product: one open purchase per holder and product.

A holder is the organization a purchase was made for, else the buying account
(``holder_key``). An *open purchase* is a one-time order that is paid, or still being paid
(``pending``, ``requires_action``, ``review``), or a subscription that is ``incomplete``,
``trialing``, ``active`` or ``past_due``. A second checkout for the same holder and product
is refused with 409 ``already_owned`` and a link to manage the first.

The database enforces it: partial unique indexes on ``(holder_key, product_id)`` over open
one-time orders and over open subscriptions (migration 0201), so two checkouts at the same
instant, in one process or two, cannot both pass. Across the two tables (a one-time order and
a subscription at once), checkouts of one holder are serialised by locking the holder's row.

An unpaid purchase that was abandoned does not block forever: a checkout that finds one asks
the gateway, and closes it when the payment failed or was never started
(``STALE_AFTER``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, or_, select, union_all
from sqlalchemy.orm import Session

from store.accounts.models import Account, Organization
from store.billing import trials
from store.billing.gateway import GatewayError
from store.billing.models import Order, Subscription
from store.billing.runtime import Billing
from store.catalog.models import Product
from store.db import lock_row, utcnow
from store.errors import Conflict

log = logging.getLogger("store.billing")

OPEN_ORDER = ("pending", "requires_action", "review", "paid", "partially_refunded")
UNPAID_ORDER = ("pending", "requires_action")
OPEN_SUBSCRIPTION = ("incomplete", "trialing", "active", "past_due")
# An unpaid purchase older than this, whose payment the gateway does not report as going
# on, is closed when the same holder checks out again.
STALE_AFTER = timedelta(minutes=15)
# Gateway states of a payment that can no longer succeed without the buyer starting over.
_DEAD_PAYMENT = ("requires_payment_method", "canceled")


def holder_key(account: Account, org: Organization | None) -> uuid.UUID:
    return org.id if org is not None else account.id


def lock_holder(session: Session, account: Account, org: Organization | None) -> None:
    """Serialise checkouts of one holder (PostgreSQL row lock; SQLite has one writer)."""
    if org is not None:
        lock_row(session, Organization, org.id, populate=False)
    else:
        lock_row(session, Account, account.id, populate=False)


def open_purchase(
    session: Session, key: uuid.UUID, product_id: uuid.UUID
) -> Order | Subscription | None:
    sub = session.scalars(
        select(Subscription)
        .where(
            Subscription.holder_key == key,
            Subscription.product_id == product_id,
            Subscription.status.in_(OPEN_SUBSCRIPTION),
        )
        .limit(1)
    ).first()
    if sub is not None:
        return sub
    return session.scalars(
        select(Order)
        .where(
            Order.holder_key == key,
            Order.product_id == product_id,
            Order.kind == "one_time",
            Order.status.in_(OPEN_ORDER),
        )
        .limit(1)
    ).first()


def manage_url(purchase: Order | Subscription) -> str:
    if isinstance(purchase, Order) and purchase.status in (*UNPAID_ORDER, "review"):
        return f"/checkout/orders/{purchase.id}"
    return "/my/purchases"


def already_owned(purchase: Order | Subscription) -> Conflict:
    if isinstance(purchase, Subscription):
        what = f"already subscribe to {purchase.product.title} ({purchase.tier.name})"
    elif purchase.status in (*UNPAID_ORDER, "review"):
        what = f"already have a checkout of {purchase.product.title} in progress"
    else:
        what = f"already own {purchase.product.title} ({purchase.tier.name})"
    kind = "subscription" if isinstance(purchase, Subscription) else "order"
    return Conflict(
        f"You {what}; manage it at {manage_url(purchase)}",
        code="already_owned",
        manage_url=manage_url(purchase),
        purchase={"kind": kind, "id": str(purchase.id), "status": purchase.status},
    )


def close_if_abandoned(session: Session, billing: Billing, purchase: Order | Subscription) -> bool:
    """Close an unpaid purchase that can no longer be paid; True if it was closed."""
    from store.billing import orders

    now = utcnow()
    if isinstance(purchase, Subscription):
        if purchase.status != "incomplete" or now - purchase.created_at < STALE_AFTER:
            return False
        status = None
        if purchase.gateway_ref and purchase.gateway == billing.gateway.name:
            try:
                fresh = billing.gateway.fetch_subscription(purchase.gateway_ref)
            except GatewayError:
                return False
            status = None if fresh is None else str(fresh["status"])
        if status in ("active", "trialing", "past_due"):
            return False
        if status not in (None, "incomplete_expired", "canceled"):
            try:
                billing.gateway.cancel_now(session, billing, subscription=purchase)
            except GatewayError:
                return False
        purchase = orders.lock_subscription(session, purchase.id) or purchase
        if purchase.status == "incomplete":
            purchase.status, purchase.canceled_at = "canceled", now
        trials.release(session, purchase)  # a trial that never started is not used up
        for order in session.scalars(
            select(Order).where(
                Order.subscription_id == purchase.id, Order.status.in_(UNPAID_ORDER)
            )
        ):
            orders.mark_failed(session, order, reason="The checkout was abandoned.")
        session.flush()
        log.info("closed abandoned subscription checkout %s", purchase.id)
        return True
    if purchase.status not in UNPAID_ORDER or now - purchase.created_at < STALE_AFTER:
        return False
    status = None
    if purchase.payment_ref and purchase.gateway == billing.gateway.name:
        status = billing.gateway.payment_status(purchase)
        if status is None and billing.gateway.name == "stripe":
            return False  # Stripe did not answer: the payment may still be going on
    if status is not None and status not in _DEAD_PAYMENT:
        return False
    orders.mark_failed(
        session, orders.lock_order(session, purchase.id), reason="The checkout was abandoned."
    )
    log.info("closed abandoned checkout %s", purchase.id)
    return True


DUPLICATE = "Paid after this checkout was closed; the product was bought by another: refunded."
UNSTARTED = "Paid after the store closed this subscription before it started: refunded."


def held_elsewhere(session: Session, order: Order) -> bool:
    """A closed one-time checkout whose holder has another open purchase of the product:
    a payment for it now would sell the product twice."""
    if order.kind != "one_time" or order.status in OPEN_ORDER or order.holder_key is None:
        return False
    return open_purchase(session, order.holder_key, order.product_id) is not None


def refund_duplicate(
    session: Session, billing: Billing, order: Order, *, payment_ref: str, at: datetime
) -> None:
    """The payment of a closed checkout completed (a payment page left open, a bank's late
    answer) while its holder holds the product by another purchase: recorded and refunded in
    full at the gateway, never fulfilled. The order stays out of the open purchases (it never
    passes through ``paid``). A gateway that refuses the refund gets the event again."""
    _refund_closed(
        session,
        billing,
        order,
        payment_ref=payment_ref,
        at=at,
        reason=DUPLICATE,
        why="paid after its checkout was closed",
    )


def closed_before_start(session: Session, sub: Subscription) -> Order | None:
    """The checkout order of a subscription the store closed before its first payment (the
    checkout failed or was abandoned, or the store ended it at once), else None."""
    if sub.status not in ("canceled", "expired") or sub.entitlement_id is not None:
        return None
    checkout = session.scalars(
        select(Order).where(Order.subscription_id == sub.id).order_by(Order.created_at).limit(1)
    ).first()
    if checkout is None or checkout.paid_at is not None:
        return None
    return checkout if checkout.status == "failed" or sub.end_requested == "now" else None


def refund_unstarted(
    session: Session,
    billing: Billing,
    sub: Subscription,
    checkout: Order,
    invoice: Any,
    *,
    at: datetime,
) -> None:
    """The first invoice of a subscription the store closed before it started was paid at
    the gateway after all (its answer to the checkout was lost, or came after the store
    ended it): the subscription is canceled there and the payment refunded in full; no
    access. A gateway that refuses either gets the event again."""
    from store.billing import shapes
    from store.billing.gateway import dig
    from store.billing.webhooks import RetryLater

    invoice_ref = str(dig(invoice, "id") or "")
    checkout.gateway_ref = checkout.gateway_ref or invoice_ref
    try:
        billing.gateway.cancel_now(session, billing, subscription=sub)
    except GatewayError as exc:
        raise RetryLater(f"subscription {sub.id} was not canceled: {exc}") from exc
    try:
        payment_ref = shapes.invoice_payment(billing, invoice, required=True) or invoice_ref
    except GatewayError as exc:  # the payment to refund is needed now: told again later
        raise RetryLater(f"the payment of invoice {invoice_ref} is not known: {exc}") from exc
    _refund_closed(
        session,
        billing,
        checkout,
        payment_ref=payment_ref,
        at=at,
        reason=UNSTARTED,
        why="paid after its subscription was closed",
    )


def _refund_closed(
    session: Session,
    billing: Billing,
    order: Order,
    *,
    payment_ref: str,
    at: datetime,
    reason: str,
    why: str,
) -> None:
    from store.billing import notices, orders
    from store.billing.webhooks import RetryLater

    if order.paid_at is not None:
        return  # recorded before (a redelivered event)
    order.payment_ref = order.payment_ref or payment_ref
    order.paid_at, order.failure_reason = at, reason
    session.flush()
    try:
        total = billing.gateway.refund(
            session, billing, order=order, amount_minor=order.total_minor
        )
    except GatewayError as exc:
        raise RetryLater(f"The payment of order {order.id} was not refunded: {exc}") from exc
    before = order.refunded_minor
    if total is not None and orders.apply_refund(session, order, refunded_total=total, at=at):
        notices.refund(
            session, billing.store, order=order, amount_minor=order.refunded_minor - before
        )
    log.warning("order %s %s: refunded", order.id, why)
    orders.record_refund(session, order, amount_minor=order.total_minor, reason=why)


@dataclass(frozen=True)
class Owned:
    """A purchase shown on a product page instead of a Buy button."""

    purchase: Order | Subscription
    org: Organization | None
    manage_url: str

    @property
    def subscription(self) -> bool:
        return isinstance(self.purchase, Subscription)

    @property
    def in_progress(self) -> bool:
        return isinstance(self.purchase, Order) and self.purchase.status in (
            *UNPAID_ORDER,
            "review",
        )


def owned_by(session: Session, account: Account, product: Product) -> list[Owned]:
    """The viewer's open purchases of a product: their own, and their organizations'."""
    from store.accounts.models import Membership

    orgs = {
        org.id: org
        for org in session.scalars(
            select(Organization)
            .join(Membership, Membership.organization_id == Organization.id)
            .where(Membership.account_id == account.id)
        )
    }
    out = []
    for key in (account.id, *orgs):
        purchase = open_purchase(session, key, product.id)
        if purchase is not None:
            out.append(Owned(purchase, orgs.get(key), manage_url(purchase)))
    return out


@dataclass(frozen=True)
class OwnedMark:
    """What a card or a search result says about a product the viewer already has: the
    viewer's own purchase before an organization's, a subscription before an order."""

    kind: str  # "subscription" | "order"
    status: str
    org_name: str | None  # the organization that holds it; None: the viewer
    manage_url: str

    @property
    def in_progress(self) -> bool:
        return self.kind == "order" and self.status in (*UNPAID_ORDER, "review")

    @property
    def label(self) -> str:
        if self.in_progress:
            return (
                "Checkout in progress"
                if self.org_name is None
                else f"{self.org_name}: checkout in progress"
            )
        if self.org_name is not None:
            return f"{self.org_name} owns this"
        return "Your plan" if self.kind == "subscription" else "You own this"


def owned_marks(
    session: Session, account: Account | None, product_ids: list[uuid.UUID]
) -> dict[uuid.UUID, OwnedMark]:
    """The open purchases of the viewer and of its organizations among these products, in
    one query (a page of cards or results)."""
    from store.accounts.models import Membership

    if account is None or not product_ids:
        return {}
    ids = sorted(set(product_ids))
    orgs = select(Membership.organization_id).where(Membership.account_id == account.id)
    subs = select(
        Subscription.product_id,
        Subscription.holder_key,
        literal("subscription").label("kind"),
        Subscription.id,
        Subscription.status,
    ).where(
        or_(Subscription.holder_key == account.id, Subscription.holder_key.in_(orgs)),
        Subscription.product_id.in_(ids),
        Subscription.status.in_(OPEN_SUBSCRIPTION),
    )
    one_time = select(
        Order.product_id,
        Order.holder_key,
        literal("order").label("kind"),
        Order.id,
        Order.status,
    ).where(
        or_(Order.holder_key == account.id, Order.holder_key.in_(orgs)),
        Order.product_id.in_(ids),
        Order.kind == "one_time",
        Order.status.in_(OPEN_ORDER),
    )
    held = union_all(subs, one_time).subquery()
    rows = session.execute(
        select(held, Organization.name.label("org_name")).outerjoin(
            Organization, Organization.id == held.c.holder_key
        )
    ).all()

    def rank(row: Any) -> tuple[bool, bool]:
        return (row.holder_key != account.id, row.kind != "subscription")

    marks: dict[uuid.UUID, OwnedMark] = {}
    for row in sorted(rows, key=rank, reverse=True):  # the best one last, so it stays
        unpaid = row.kind == "order" and row.status in (*UNPAID_ORDER, "review")
        manage = f"/checkout/orders/{row.id}" if unpaid else "/my/purchases"
        org_name = None if row.holder_key == account.id else row.org_name
        marks[row.product_id] = OwnedMark(row.kind, row.status, org_name, manage)
    return marks
