"""Entitlements: the record that an account or organization may use a product at a tier.

Every path that gives access (free "Get", operator grant, purchase, subscription, trial)
goes through ``create_entitlement``; every path that takes it away through ``revoke`` or
``set_status``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from store import validation
from store.accounts import service as accounts
from store.accounts.models import Account, Membership, Organization
from store.audit import service as audit
from store.catalog.models import Product, Tier
from store.db import lock_row, utcnow
from store.errors import Conflict, Forbidden, NotFound, PaymentRequired, ValidationFailed
from store.licensing.models import Entitlement
from store.licensing.signer import LicenseSigner

SOURCES = ("free", "grant", "order", "subscription", "trial")
STATUSES = ("active", "suspended", "revoked", "expired")


def seats_for(unit_seats: int | None, quantity: int) -> int | None:
    """Seats of ``quantity`` units of ``unit_seats`` each (None: unlimited)."""
    return unit_seats * max(1, quantity) if unit_seats is not None else None


def create_entitlement(
    session: Session,
    *,
    tier: Tier,
    source: str,
    account: Account | None = None,
    org: Organization | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    source_ref: str | None = None,
    granted_by: Account | None = None,
    reason: str = "",
    quantity: int = 1,
    unit_seats: int | Literal["tier"] | None = "tier",
    features: list[str] | None = None,
) -> Entitlement:
    """``quantity``: how many of the tier were bought; a tier with a seat limit gives that
    many times its seats (licenses carry the product). ``unit_seats`` and ``features``: the
    terms as bought, when they were recorded at purchase (default: the tier's now)."""
    if (account is None) == (org is None):
        raise ValidationFailed("An entitlement belongs to exactly one account or organization")
    if source not in SOURCES:
        raise ValidationFailed(f"Source must be one of {', '.join(SOURCES)}")
    starts_at = starts_at or utcnow()
    if ends_at is not None and ends_at <= starts_at:
        raise ValidationFailed("The end must come after the start", field="ends_at")
    entitlement = Entitlement(
        account_id=account.id if account else None,
        organization_id=org.id if org else None,
        product_id=tier.product_id,
        tier_id=tier.id,
        source=source,
        source_ref=source_ref,
        status="active",
        starts_at=starts_at,
        ends_at=ends_at,
        seats=seats_for(tier.seats if unit_seats == "tier" else unit_seats, quantity),
        features=list(tier.features if features is None else features),
        granted_by_id=granted_by.id if granted_by else None,
        reason=validation.text(reason, what="Reason", max_len=2000, field="reason", lines=True),
    )
    session.add(entitlement)
    session.flush()
    return entitlement


def get_free_tier(session: Session, *, account: Account, tier: Tier) -> Entitlement:
    """The "Get" button of a free tier: active at once; asking twice returns the same one."""
    # Read again under a key-share lock: a change of the tier's billing committing at this
    # instant (store.catalog.service.update_tier locks the row) is waited for and seen.
    lock_row(session, Tier, tier.id, mode="key_share")
    product = tier.product
    if product.status != "published" or not tier.active:
        raise NotFound("This tier is not available")
    if not tier.is_free:
        raise PaymentRequired("This tier is paid; buy it to get access", code="tier_not_free")
    now = utcnow()
    for existing in held_by_account(session, account, product):
        if existing.tier_id == tier.id and existing.is_usable(now):
            return existing
    return create_entitlement(session, tier=tier, source="free", account=account)


def _can_administer(session: Session, actor: Account, product: Product) -> bool:
    return actor.is_admin or accounts.has_role(session, actor, product.organization, "owner")


def grant(
    session: Session,
    *,
    actor: Account,
    tier: Tier,
    account: Account | None = None,
    org: Organization | None = None,
    ends_at: datetime | None = None,
    reason: str = "",
) -> Entitlement:
    """An operator's or the publishing organization owner's grant of a tier, without payment."""
    if not _can_administer(session, actor, tier.product):
        raise Forbidden("Only administrators and the publisher's owners grant entitlements")
    ends_at = validation.moment(ends_at, what="The end")
    entitlement = create_entitlement(
        session,
        tier=tier,
        source="grant",
        account=account,
        org=org,
        ends_at=ends_at,
        granted_by=actor,
        reason=reason,
    )
    _audit(session, "entitlement.grant", entitlement, actor)
    return entitlement


def get_entitlement(session: Session, entitlement_id: uuid.UUID) -> Entitlement:
    entitlement = session.get(Entitlement, entitlement_id)
    if entitlement is None:
        raise NotFound("No such entitlement")
    return entitlement


def get_visible_entitlement(
    session: Session, entitlement_id: uuid.UUID, account: Account
) -> Entitlement:
    """The entitlement, if this account holds it, administers it or sits in its organization."""
    entitlement = get_entitlement(session, entitlement_id)
    if entitlement.account_id == account.id:
        return entitlement
    if entitlement.organization is not None and accounts.has_role(
        session, account, entitlement.organization, "viewer"
    ):
        return entitlement
    if _can_administer(session, account, entitlement.product):
        return entitlement
    raise NotFound("No such entitlement")


def revoke(
    session: Session, *, entitlement: Entitlement, actor: Account | None, reason: str
) -> Entitlement:
    """Take access away for good (operator action, refund, dispute). ``actor`` None = system."""
    if actor is not None and not _can_administer(session, actor, entitlement.product):
        raise Forbidden("Only administrators and the publisher's owners revoke entitlements")
    reason = validation.text(
        reason, what="Reason", max_len=2000, required=True, field="reason", lines=True
    )
    if entitlement.status == "revoked":
        return entitlement
    entitlement.status = "revoked"
    entitlement.revoked_at = utcnow()
    entitlement.reason = reason
    session.flush()
    _after_change(session, entitlement, None)  # revoking signs nothing
    _audit(session, "entitlement.revoke", entitlement, actor)
    return entitlement


def _audit(session: Session, action: str, entitlement: Entitlement, actor: Account | None) -> None:
    holder = entitlement.account or entitlement.organization
    audit.record(
        session,
        action=action,
        actor=actor,
        target=entitlement,
        org=entitlement.product.organization_id,
        details={
            "product": entitlement.product.repository,
            "tier": entitlement.tier.slug,
            "holder": getattr(holder, "username", None) or getattr(holder, "slug", None),
            "reason": entitlement.reason,
        },
    )


def set_status(
    session: Session,
    *,
    entitlement: Entitlement,
    status: str,
    reason: str = "",
    signer: LicenseSigner | None,
) -> Entitlement:
    """System transitions (suspend for non-payment, reinstate, expire). ``signer``: re-issue
    the license at once when reinstated with new terms (None: on its next request)."""
    if status not in STATUSES:
        raise ValidationFailed(f"Status must be one of {', '.join(STATUSES)}")
    if entitlement.status == "revoked" and status != "revoked":
        raise Conflict("A revoked entitlement cannot be reinstated")
    entitlement.status = status
    if reason:
        entitlement.reason = reason
    session.flush()
    _after_change(session, entitlement, signer)
    return entitlement


def extend(
    session: Session,
    *,
    entitlement: Entitlement,
    ends_at: datetime | None,
    grace_until: datetime | None = None,
    signer: LicenseSigner | None,
) -> Entitlement:
    """New terms (renewal, grace): ``signer`` re-issues the license at once (None: on its
    next request)."""
    entitlement.ends_at = ends_at
    entitlement.grace_until = grace_until
    session.flush()
    _after_change(session, entitlement, signer)
    return entitlement


def _after_change(session: Session, entitlement: Entitlement, signer: LicenseSigner | None) -> None:
    """Hook for licensing: licenses follow their entitlement (revoked or re-issued)."""
    from store.licensing import hooks

    hooks.entitlement_changed(session, entitlement, signer)


def held_by_account(session: Session, account: Account, product: Product) -> list[Entitlement]:
    org_ids = select(Membership.organization_id).where(Membership.account_id == account.id)
    return list(
        session.scalars(
            select(Entitlement)
            .where(
                Entitlement.product_id == product.id,
                or_(Entitlement.account_id == account.id, Entitlement.organization_id.in_(org_ids)),
            )
            .order_by(Entitlement.created_at.desc())
        )
    )


def entitlements_of(session: Session, account: Account) -> list[Entitlement]:
    """Everything this account may use, its own and its organizations'."""
    org_ids = select(Membership.organization_id).where(Membership.account_id == account.id)
    return list(
        session.scalars(
            select(Entitlement)
            .where(
                or_(Entitlement.account_id == account.id, Entitlement.organization_id.in_(org_ids))
            )
            .order_by(Entitlement.created_at.desc())
        )
    )


def entitlements_of_product(session: Session, product: Product) -> list[Entitlement]:
    return list(
        session.scalars(
            select(Entitlement)
            .where(Entitlement.product_id == product.id)
            .order_by(Entitlement.created_at.desc())
        )
    )
