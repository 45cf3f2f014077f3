"""Notices by e-mail about licenses, publishing and organizations, and what every notice
module shares: recipients, settings, one message per recipient and cause.

Each notice has a ``dedupe_key`` naming its cause (a license document, a decision, an
invitation), so an event handled twice, or by two processes at once, mails once. Notices of
a category (``sales``, ``reviews``, ``renewals``) respect the recipient's preferences; the
others are transactional. Payment and subscription notices are billing's
(``store.billing.notices``), built on the helpers here.

Settings are passed by the caller (the request's, the command's, the billing runtime's
``store``); given none, nothing is queued and a warning is logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.accounts.models import Account, Invitation, Membership, Organization
from store.catalog.models import Product
from store.config import Settings
from store.db import utcnow
from store.mail import outbox
from store.mail.outbox import Attachment

if TYPE_CHECKING:
    from store.licensing.models import Entitlement, License

log = logging.getLogger("store.mail")


def settings_of(settings: Settings | None, what: str) -> Settings | None:
    """The settings a notice is written with (links, sender); without them it is not mailed,
    and a warning says so."""
    if settings is None:
        log.warning("no store settings: %s not mailed", what)
    return settings


def day(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d}" if value is not None else ""


def stamp(value: datetime | None) -> str:
    return str(int(value.timestamp())) if value is not None else "none"


def reachable(account: Account | None) -> bool:
    return account is not None and account.is_active and account.deleted_at is None


def people(
    session: Session, organization_id: uuid.UUID | None, roles: Iterable[str]
) -> list[Account]:
    """Active members of the organization with one of ``roles``."""
    if organization_id is None:
        return []
    rows = session.scalars(
        select(Account)
        .join(Membership, Membership.account_id == Account.id)
        .where(
            Membership.organization_id == organization_id,
            Membership.role.in_(tuple(roles)),
            Account.is_active.is_(True),
        )
        .order_by(Account.username)
    )
    return [a for a in rows if a.deleted_at is None]


def holders(
    session: Session, account_id: uuid.UUID | None, organization_id: uuid.UUID | None
) -> list[Account]:
    """Who hears about a purchase: the organization's owners when bought for one, else the
    buying account."""
    if organization_id is not None:
        owners = people(session, organization_id, ("owner",))
        if owners:
            return owners
    account = session.get(Account, account_id) if account_id is not None else None
    return [account] if account is not None and reachable(account) else []


def send(
    session: Session,
    settings: Settings,
    template: str,
    recipients: Iterable[Account],
    key: str,
    context: dict[str, Any],
    *,
    category: str = outbox.TRANSACTIONAL,
    attachments: Iterable[Attachment] = (),
) -> int:
    """Queue one message per recipient (key ``<key>:<account>`` for more than one)."""
    people = [a for a in recipients if reachable(a)]
    files = list(attachments)
    sent = 0
    for account in people:
        dedupe = key if len(people) == 1 else f"{key}:{account.id.hex}"
        if (
            outbox.enqueue(
                session,
                settings=settings,
                template=template,
                account=account,
                context=context,
                category=category,
                dedupe_key=dedupe[:200],
                attachments=files,
            )
            is not None
        ):
            sent += 1
    return sent


# --- licenses -------------------------------------------------------------------------------


def license_issued(
    session: Session, settings: Settings, *, document: License, entitlement: Entitlement
) -> None:
    """A license document was signed: the ``.lic`` attached. The first document of an
    entitlement is transactional; re-issues (renewals, extensions) are renewal notices."""
    from store.licensing.models import License as LicenseRow
    from store.licensing.service import license_file

    earlier = session.scalar(
        select(func.count()).where(
            LicenseRow.entitlement_id == entitlement.id, LicenseRow.id != document.id
        )
    )
    filename, text = license_file(document)
    send(
        session,
        settings,
        "license_issued",
        holders(session, entitlement.account_id, entitlement.organization_id),
        f"license:{document.id}",
        {
            "product": entitlement.product.title,
            "tier": entitlement.tier.name,
            "until": day(entitlement.ends_at) or "never",
            "url": f"{settings.public_url}/my/content",
        },
        category="renewals" if earlier else outbox.TRANSACTIONAL,
        attachments=[Attachment(filename, "application/x-store-license", text.encode())],
    )


# --- publishers and organizations -----------------------------------------------------------


def certification_decided(
    session: Session,
    settings: Settings | None,
    *,
    request_id: uuid.UUID,
    product: Product,
    tag: str,
    decision: str,
    note: str,
) -> None:
    """To the publisher's owners and editors: a certification request was approved or
    rejected (with the reviewer's note)."""
    resolved = settings_of(settings, f"certification decision {request_id}")
    if resolved is None:
        return
    send(
        session,
        resolved,
        "certification_decided",
        people(session, product.organization_id, ("owner", "editor")),
        f"certification:{request_id}:{decision}",
        {
            "product": product.title,
            "tag": tag,
            "decision": decision,
            "note": note,
            "url": f"{resolved.public_url}/publish/{product.organization.slug}",
        },
        category="reviews",
    )


def publisher_verification(
    session: Session, settings: Settings | None, *, org: Organization, verified: bool
) -> None:
    """To the organization's owners: an administrator verified it, or took that back."""
    resolved = settings_of(settings, f"verification decision of {org.slug}")
    if resolved is None:
        return
    send(
        session,
        resolved,
        "publisher_verified" if verified else "publisher_unverified",
        people(session, org.id, ("owner",)),
        f"verification:{org.id}:{verified}:{stamp(org.verified_at or utcnow())}",
        {
            "organization": org.name,
            "note": org.verification_note,
            "url": f"{resolved.public_url}/publish/{org.slug}",
        },
        category="reviews",
    )


def invitation(session: Session, settings: Settings | None, *, invitation: Invitation) -> None:
    """To the invited account: an organization invites it (once per invitation and role)."""
    resolved = settings_of(settings, f"invitation {invitation.id}")
    if resolved is None:
        return
    invitee = session.get(Account, invitation.account_id)
    inviter = session.get(Account, invitation.invited_by_id) if invitation.invited_by_id else None
    org = session.get(Organization, invitation.organization_id)
    if org is None or invitee is None:
        return
    send(
        session,
        resolved,
        "invitation",
        [invitee],
        f"invitation:{invitation.id}:{invitation.role}",
        {
            "organization": org.name,
            "slug": org.slug,
            "role": invitation.role,
            "inviter": (inviter.display_name or inviter.username) if inviter else org.name,
            "url": f"{resolved.public_url}/my/content",
        },
    )
