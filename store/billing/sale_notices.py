"""How a seller's people hear of its sales: a mail per sale, one daily digest, or none.

Owners and finance members of a selling organization choose, each for each organization
(``SaleNoticePreference``; no row means a mail per sale). A paid order is told to each of
them once: mailed alone at once (mode ``each``), or in the digest ``store mail digests``
queues for the day (mode ``daily``), never both. ``SaleNotice`` holds one row per sale and
person, written in the same transaction as the mail that tells it, with ``INSERT … ON
CONFLICT DO NOTHING``: whoever writes the row tells the sale, so a digest run and a late
payment, or two digest runs at once, cannot both tell it.

Digests: one per person, organization and day (the outbox key ``sales-digest:…:<day>``),
for the sales paid before the current UTC day began and not told yet, at most
``DIGEST_WINDOW`` back and never before the person chose the digest. A sale whose payment
committed after that day's digest was sent goes into the next day's. No untold sales: no
mail. The ``sales`` notice category (``/my/notifications``, unsubscribe links) still turns
every sale notice off.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.accounts.models import Account, Membership, Organization
from store.billing.models import SALE_NOTICE_MODES, Order, SaleNotice, SaleNoticePreference
from store.catalog.models import Product
from store.catalog.money import format_money
from store.config import Settings
from store.db import utcnow
from store.errors import NotFound, ValidationFailed
from store.mail import outbox
from store.mail.models import OutboxMessage
from store.mail.notices import people, reachable, settings_of

SELLER_ROLES = ("owner", "finance")
DIGEST_WINDOW = timedelta(days=7)  # how far back a digest looks for untold sales


@dataclass(frozen=True)
class Choice:
    organization: Organization
    mode: str


# --- choices ----------------------------------------------------------------------------


def choices(session: Session, account: Account) -> list[Choice]:
    """The organizations whose sales the account hears of (it is an owner or finance
    member), each with its choice."""
    rows = session.execute(
        select(Organization, SaleNoticePreference.mode)
        .join(Membership, Membership.organization_id == Organization.id)
        .outerjoin(
            SaleNoticePreference,
            (SaleNoticePreference.organization_id == Organization.id)
            & (SaleNoticePreference.account_id == account.id),
        )
        .where(Membership.account_id == account.id, Membership.role.in_(SELLER_ROLES))
        .order_by(Organization.slug)
    ).all()
    return [Choice(organization=org, mode=mode or "each") for org, mode in rows]


def choose(session: Session, *, account: Account, organization: str, mode: str) -> Choice:
    """Set how the account hears of the organization's sales (owners and finance members)."""
    if mode not in SALE_NOTICE_MODES:
        raise ValidationFailed(
            f"'{mode}' is not a choice: each (a mail per sale), daily (one digest a day) or none",
            code="bad_sale_notice_mode",
            field="mode",
        )
    found = {c.organization.slug: c for c in choices(session, account)}
    choice = found.get(organization.strip().lower())
    if choice is None:
        raise NotFound(
            f"You are not an owner or finance member of an organization '{organization}'",
            code="no_such_organization",
            field="organization",
        )
    pref = session.get(SaleNoticePreference, (account.id, choice.organization.id))
    if pref is None:
        pref = SaleNoticePreference(account_id=account.id, organization_id=choice.organization.id)
        session.add(pref)
    if pref.mode != mode:
        pref.mode, pref.since = mode, utcnow()
    session.flush()
    return Choice(organization=choice.organization, mode=mode)


def _modes(session: Session, organization_id: uuid.UUID) -> dict[uuid.UUID, str]:
    return {
        account_id: mode
        for account_id, mode in session.execute(
            select(SaleNoticePreference.account_id, SaleNoticePreference.mode).where(
                SaleNoticePreference.organization_id == organization_id
            )
        )
    }


def _claim(session: Session, order_ids: list[uuid.UUID], account_id: uuid.UUID,
           digest_day: str | None) -> set[uuid.UUID]:  # fmt: skip
    """Write the sales told to the account; the ones this call wrote (not told before)."""
    if not order_ids:
        return set()
    now = utcnow()
    rows = [
        {"order_id": o, "account_id": account_id, "digest_day": digest_day, "created_at": now}
        for o in order_ids
    ]
    insert: Any = (
        postgresql.insert(SaleNotice)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite.insert(SaleNotice)
    )
    stmt = insert.values(rows).on_conflict_do_nothing().returning(SaleNotice.order_id)
    return set(session.scalars(stmt))


# --- a sale, alone ----------------------------------------------------------------------


def sale_paid(session: Session, settings: Settings | None, *, order: Order) -> int:
    """To the seller's owners and finance members who want a mail per sale: this order was
    paid (the others hear of it in their digest, or not). How many were mailed."""
    resolved = settings_of(settings, f"sale notice of order {order.id}")
    if resolved is None:
        return 0
    product = session.get(Product, order.product_id)
    if product is None or product.organization_id is None:
        return 0
    modes = _modes(session, product.organization_id)
    context = {
        "product": product.title,
        "tier": order.tier.name,
        "amount": format_money(order.total_minor, order.currency),
        "url": f"{resolved.public_url}/publish/{product.organization.slug}/-/orders",
    }
    sent = 0
    for account in people(session, product.organization_id, SELLER_ROLES):
        if modes.get(account.id, "each") != "each":
            continue
        if not _claim(session, [order.id], account.id, None):
            continue  # already told (a redelivered event, or a digest got it first)
        queued = outbox.enqueue(
            session,
            settings=resolved,
            template="new_sale",
            account=account,
            context=context,
            category="sales",
            dedupe_key=f"sale:{order.id}:{account.id.hex}",
        )
        sent += queued is not None
    return sent


# --- digests ----------------------------------------------------------------------------


def day_bounds(now: datetime) -> tuple[datetime, str]:
    """(the start of ``now``'s UTC day: digests tell sales paid before it, the day they
    are the digest of: the day before, ``YYYY-MM-DD``)."""
    current = now.astimezone(UTC)
    cutoff = current.replace(hour=0, minute=0, second=0, microsecond=0)
    return cutoff, f"{cutoff - timedelta(days=1):%Y-%m-%d}"


def digest_recipients(session: Session) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(account, organization) of everyone who chose the daily digest."""
    return [
        (a, o)
        for a, o in session.execute(
            select(SaleNoticePreference.account_id, SaleNoticePreference.organization_id)
            .where(SaleNoticePreference.mode == "daily")
            .order_by(SaleNoticePreference.account_id, SaleNoticePreference.organization_id)
        )
    ]


def digest_key(account_id: uuid.UUID, organization_id: uuid.UUID, day: str) -> str:
    return f"sales-digest:{organization_id.hex}:{account_id.hex}:{day}"


def send_digest(
    session: Session,
    settings: Settings,
    *,
    account_id: uuid.UUID,
    organization_id: uuid.UUID,
    now: datetime | None = None,
) -> int:
    """Queue the account's digest of the organization's untold sales for the day before
    ``now``'s; how many sales it tells (0: no mail, none due or already sent today)."""
    cutoff, day = day_bounds(now or utcnow())
    pref = session.get(SaleNoticePreference, (account_id, organization_id))
    account = session.get(Account, account_id)
    org = session.get(Organization, organization_id)
    if pref is None or pref.mode != "daily" or org is None or not reachable(account):
        return 0
    assert account is not None
    role = session.scalar(
        select(Membership.role).where(
            Membership.account_id == account_id, Membership.organization_id == organization_id
        )
    )
    key = digest_key(account_id, organization_id, day)
    if role not in SELLER_ROLES or session.scalar(
        select(OutboxMessage.id).where(OutboxMessage.dedupe_key == key)
    ):
        return 0
    told = select(SaleNotice.order_id).where(SaleNotice.account_id == account_id)
    orders = session.scalars(
        select(Order)
        .join(Product, Product.id == Order.product_id)
        .where(
            Product.organization_id == organization_id,
            Order.paid_at.is_not(None),
            Order.paid_at >= max(pref.since, cutoff - DIGEST_WINDOW),
            Order.paid_at < cutoff,
            Order.id.not_in(told),
        )
        .order_by(Order.paid_at, Order.id)
    ).all()
    if not orders:
        return 0
    savepoint = session.begin_nested()
    mine = _claim(session, [o.id for o in orders], account_id, day)
    sales = [o for o in orders if o.id in mine]
    queued = (
        outbox.enqueue(
            session,
            settings=settings,
            template="sales_digest",
            account=account,
            context=_digest_context(settings, org, day, sales),
            category="sales",
            dedupe_key=key,
        )
        if sales
        else None
    )
    if queued is None:  # told by another run meanwhile, or the account turned sales off
        savepoint.rollback()
        return 0
    savepoint.commit()
    return len(sales)


def _digest_context(
    settings: Settings, org: Organization, day: str, sales: list[Order]
) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for order in sales:
        totals[order.currency] = totals.get(order.currency, 0) + order.total_minor
    return {
        "organization": org.name,
        "day": day,
        "count": len(sales),
        "total": ", ".join(format_money(v, c) for c, v in sorted(totals.items())),
        "sales": [
            {
                "product": o.product.title,
                "tier": o.tier.name,
                "amount": format_money(o.total_minor, o.currency),
                "time": f"{o.paid_at:%Y-%m-%d %H:%M} UTC" if o.paid_at else "",
            }
            for o in sales
        ],
        "url": f"{settings.public_url}/publish/{org.slug}/-/orders",
    }
