"""Free trials: one per person per product, whichever organization they buy for.

A trial is claimed when its checkout starts, with one row for the buyer and one for the
organization bought for (if any). The unique keys (product, account) and (product,
organization) make a second claim fail in the database, so two checkouts at the same instant,
on one process or two, cannot both get a trial. A person is not offered a trial when they, or
any organization they belong to, ever had one for the product (running, converted or ended),
nor when a subscription recorded before claims existed had one. A checkout that never started
(its first payment failed) gives its claim back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.accounts.models import Account, Membership, Organization
from store.billing.models import Order, Subscription, TrialClaim
from store.catalog.models import Product
from store.errors import Conflict


def eligible(
    session: Session, *, account: Account, product: Product, org: Organization | None = None
) -> bool:
    """Whether this person, buying for ``org`` (or themselves), may start a trial."""
    # Buying for an organization needs its ownership, so it is among the person's own.
    member_of = select(Membership.organization_id).where(Membership.account_id == account.id)
    claimed = session.scalar(
        select(TrialClaim.id)
        .where(
            TrialClaim.product_id == product.id,
            or_(
                TrialClaim.account_id == account.id,
                TrialClaim.organization_id.in_(member_of),
            ),
        )
        .limit(1)
    )
    if claimed is not None:
        return False
    earlier = session.scalar(
        select(Subscription.id)
        .where(
            Subscription.product_id == product.id,
            Subscription.trial_end.is_not(None),
            or_(
                Subscription.account_id == account.id,
                Subscription.organization_id.in_(member_of),
            ),
        )
        .limit(1)
    )
    return earlier is None


def claim(
    session: Session,
    *,
    account: Account,
    product: Product,
    subscription: Subscription,
    org: Organization | None = None,
) -> None:
    """Record the trial; :class:`Conflict` ``trial_used`` if a concurrent checkout took it."""
    rows = [
        TrialClaim(product_id=product.id, account_id=account.id, subscription_id=subscription.id)
    ]
    if org is not None:
        rows.append(
            TrialClaim(
                product_id=product.id, organization_id=org.id, subscription_id=subscription.id
            )
        )
    try:
        with session.begin_nested():
            session.add_all(rows)
            session.flush()
    except IntegrityError:
        raise Conflict("You already had a free trial of this product", code="trial_used") from None


def release(session: Session, subscription: Subscription) -> None:
    """A trial checkout that never started gives its claim back."""
    if subscription.entitlement_id is None:
        session.execute(delete(TrialClaim).where(TrialClaim.subscription_id == subscription.id))


@dataclass(frozen=True)
class FirstCharge:
    """When a trial started by an order is first charged, and how much (None: never, it
    was canceled and ends without a charge)."""

    trial_end: datetime
    amount_minor: int | None
    currency: str


def first_charge(order: Order) -> FirstCharge | None:
    """For the receipt of a trial start: None when the order is not one."""
    sub = order.subscription
    if order.kind != "subscription" or sub is None or sub.trial_end is None:
        return None
    if order.total_minor != 0:
        return None
    if sub.cancel_at_period_end or sub.status in ("canceled", "expired"):
        return FirstCharge(sub.trial_end, None, sub.currency)
    # The subscription recorded its quote: the net amount and tax of every charge.
    return FirstCharge(sub.trial_end, sub.amount_minor + sub.tax_minor, sub.currency)
