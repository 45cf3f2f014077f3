"""Deleting an account, and exporting what the store holds about it.

Deletion is one transaction and needs the password (and a current two-factor code when the
account has them). It is refused, with every reason at once, while the account

- is the only owner of an organization that has other members, products, or purchases of
  its own (hand it over first; an organization with nothing but its owner goes with the
  account), or repositories (delete them first: the organization's name is freed with it,
  and whoever takes the name next would own the images left under it), or
- has a subscription that would renew (cancel it first; one that ends at its period's end
  is allowed: nothing is charged again), or
- is the last active administrator.

Its checkouts not paid yet end (a payment completing later is refunded in full, never
fulfilled: ``store.billing.deleted_buyers``).

Then the personal data is erased: name, address, password and second factor, sessions and
their addresses, links by e-mail, notice preferences, queued and past mail. Every token and
refresh token is revoked, memberships and invitations end, entitlements held by the account
are revoked (their license documents with them). Repositories of the personal namespace
become private and lose their collaborators (their images stay for the operator to remove),
and the account is nobody's collaborator any more. The account row stays, anonymised and
disabled, so orders and receipts keep their (anonymous) buyer for accounting; its username
stays reserved so nobody else can take it and be mistaken for the former owner. A notice
goes to the former address.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts import sessions, two_factor
from store.accounts.models import (
    AccessToken,
    Account,
    AccountToken,
    Invitation,
    Membership,
    Namespace,
    Organization,
    RecoveryCode,
    WebSession,
)
from store.audit import service as audit
from store.audit.models import AuditEvent
from store.billing import deleted_buyers
from store.billing.models import Order, Subscription
from store.catalog.models import Product
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import Conflict, ValidationFailed
from store.licensing import entitlements as entitlement_service
from store.licensing.models import Entitlement, License
from store.mail import outbox
from store.mail import service as mail_service
from store.mail.models import MailOptOut, OutboxMessage
from store.registry import hub
from store.registry.models import HubRepository, RepositoryCollaborator

DELETED_NAME = "Deleted account"
# An incomplete subscription was never paid for: it does not hold deletion back.
_RENEWING = ("trialing", "active", "past_due")


def _org_is_empty(session: Session, org: Organization, account: Account) -> bool:
    """Nothing but its owner: no other member, product, purchase or pending invitation."""
    checks = (
        select(Membership.id).where(
            Membership.organization_id == org.id, Membership.account_id != account.id
        ),
        select(Product.id).where(Product.organization_id == org.id),
        select(Order.id).where(Order.organization_id == org.id),
        select(Subscription.id).where(Subscription.organization_id == org.id),
        select(Entitlement.id).where(Entitlement.organization_id == org.id),
    )
    return not any(session.scalar(q.limit(1)) for q in checks)


def _org_has_repositories(session: Session, org: Organization) -> bool:
    """Repositories under the organization's namespace: they are pullable by whoever owns
    the name, and the name is freed when the organization goes."""
    found = session.scalar(select(HubRepository.id).where(HubRepository.namespace == org.slug))
    return found is not None


def _sole_owned(session: Session, account: Account) -> list[Organization]:
    owned = []
    for org, role in accounts.organizations_of(session, account):
        if role != "owner":
            continue
        # Counted under the organization's lock, as leaving and demoting count: an owner
        # leaving at this moment waits, then sees this account gone and is refused.
        if accounts.owner_count(session, org) == 1:
            owned.append(org)
    return owned


def deletion_blockers(session: Session, account: Account) -> list[str]:
    """Why the account cannot be deleted now (empty: it can)."""
    problems = []
    for org in _sole_owned(session, account):
        if not _org_is_empty(session, org, account):
            problems.append(
                f"You are the only owner of {org.slug}: make another member an owner first"
            )
        elif _org_has_repositories(session, org):
            problems.append(
                f"{org.slug} has repositories: delete them first, or make another member an owner"
            )
    renewing = session.scalars(
        select(Subscription).where(
            Subscription.account_id == account.id,
            Subscription.status.in_(_RENEWING),
            Subscription.cancel_at_period_end.is_(False),
        )
    )
    for sub in renewing:
        problems.append(
            f"Your subscription to {sub.product.title} renews: cancel it first "
            "(it may run to the end of the period you paid for)"
        )
    if account.is_admin:
        others = session.scalar(
            select(func.count()).where(
                Account.is_admin.is_(True), Account.is_active.is_(True), Account.id != account.id
            )
        )
        if not others:
            problems.append("You are the last administrator: make another one first")
    return problems


def delete_account(
    session: Session, *, settings: Settings, account: Account, password: str, code: str = ""
) -> None:
    """Delete the account (see the module docstring); nothing changes when it is refused."""
    if account.deleted_at is not None:
        raise Conflict("This account is deleted already", code="account_deleted")
    if not security.verify_password(account.password_hash, password):
        raise ValidationFailed(
            "The current password is not correct", code="wrong_password", field="password"
        )
    # The account's row and its live tokens, locked before anything else is written (a
    # recovery code's use appends to the audit log, whose lock is held to the end): a
    # credential being made from one of them at this instant holds it, so this waits for
    # it here and finds what it made below, or it waits for this deletion and is refused
    # (accounts.service, "credentials made from credentials"). FOR NO KEY UPDATE: the
    # key-share locks of rows inserted with their ids do not wait for these.
    lock_row(session, Account, account.id, mode="no_key_update", populate=False)
    session.execute(
        select(AccessToken.id)
        .where(AccessToken.account_id == account.id, AccessToken.revoked_at.is_(None))
        .with_for_update(key_share=True)
    )
    if two_factor.enabled(account):
        if not code.strip():
            raise ValidationFailed(
                "Enter a code from your authenticator app or a recovery code",
                code="two_factor_required",
                field="code",
            )
        two_factor.verify(session, settings=settings, account=account, code=code)
    problems = deletion_blockers(session, account)
    if problems:
        raise Conflict(" ".join(problems), code="account_not_deletable", problems=problems)

    now = utcnow()
    # Its tokens first, and what was made from them (to any depth; the rows above are
    # locked, so these statements see every credential made from them).
    own = list(
        session.scalars(
            select(AccessToken.id).where(
                AccessToken.account_id == account.id, AccessToken.revoked_at.is_(None)
            )
        )
    )
    session.execute(
        update(AccessToken)
        .where(AccessToken.id.in_(own))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    # Robot tokens the account made with one of its tokens die with them.
    accounts.revoke_descendants(session, own, now)
    former_address, former_name = account.email, account.display_name or account.username
    for org in _sole_owned(session, account):  # empty ones (checked above)
        session.execute(delete(AccessToken).where(AccessToken.organization_id == org.id))
        session.execute(delete(Invitation).where(Invitation.organization_id == org.id))
        session.execute(delete(Membership).where(Membership.organization_id == org.id))
        session.execute(delete(Namespace).where(Namespace.organization_id == org.id))
        session.execute(delete(Organization).where(Organization.id == org.id))
    session.execute(delete(Membership).where(Membership.account_id == account.id))
    session.execute(delete(Invitation).where(Invitation.account_id == account.id))
    # The personal namespace: its repositories become private and lose their
    # collaborators; the account is nobody's collaborator any more.
    personal = list(
        session.scalars(select(HubRepository).where(HubRepository.namespace == account.username))
    )
    for repository in personal:
        hub.set_visibility(session, name=repository.name, visibility="private")
    if personal:
        session.execute(
            delete(RepositoryCollaborator).where(
                RepositoryCollaborator.repository_id.in_([r.id for r in personal])
            )
        )
    session.execute(
        delete(RepositoryCollaborator).where(RepositoryCollaborator.account_id == account.id)
    )

    # Checkouts not paid yet end: a payment that completes anyway is refunded
    # (store.billing.deleted_buyers).
    deleted_buyers.end_checkouts(session, account)
    held = session.scalars(
        select(Entitlement).where(
            Entitlement.account_id == account.id, Entitlement.status != "revoked"
        )
    )
    for entitlement in list(held):
        entitlement_service.revoke(
            session, entitlement=entitlement, actor=None, reason="The account was deleted"
        )
    sessions.end_all_sessions(session, account, reason="deleted")
    session.execute(delete(WebSession).where(WebSession.account_id == account.id))
    session.execute(delete(AccountToken).where(AccountToken.account_id == account.id))
    session.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))
    session.execute(delete(MailOptOut).where(MailOptOut.account_id == account.id))
    session.execute(delete(OutboxMessage).where(OutboxMessage.account_id == account.id))

    account.email = f"deleted-{account.id.hex}@deleted.invalid"
    account.display_name = DELETED_NAME
    account.password_hash = security.hash_password(secrets.token_urlsafe(32))
    account.password_changed_at = now
    account.totp_secret = None
    account.totp_enabled_at = None
    account.totp_last_step = None
    account.email_verified_at = None
    account.is_admin = False
    account.is_active = False
    account.deleted_at = now
    session.flush()
    audit.record(session, action="account.delete", actor=account, target=account)
    outbox.enqueue(
        session,
        settings=settings,
        template="account_deleted",
        to=former_address,
        context={"name": former_name},
    )
    session.flush()


# --- export -----------------------------------------------------------------------------


def _when(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def export(session: Session, account: Account) -> dict[str, Any]:
    """Everything the store holds about the account, as JSON-ready data."""
    orders = session.scalars(
        select(Order).where(Order.account_id == account.id).order_by(Order.created_at)
    )
    subscriptions = session.scalars(
        select(Subscription)
        .where(Subscription.account_id == account.id)
        .order_by(Subscription.created_at)
    )
    held = session.scalars(
        select(Entitlement)
        .where(Entitlement.account_id == account.id)
        .order_by(Entitlement.created_at)
    )
    held_list = list(held)
    documents: list[License] = (
        list(
            session.scalars(
                select(License)
                .where(License.entitlement_id.in_([e.id for e in held_list]))
                .order_by(License.issued_at)
            )
        )
        if held_list
        else []
    )
    tokens = session.scalars(
        select(AccessToken)
        .where(AccessToken.account_id == account.id)
        .order_by(AccessToken.created_at)
    )
    web_sessions = session.scalars(
        select(WebSession)
        .where(WebSession.account_id == account.id)
        .order_by(WebSession.created_at)
    )
    messages = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.account_id == account.id)
        .order_by(OutboxMessage.created_at)
    )
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.actor_id == account.id).order_by(AuditEvent.seq)
    )
    return {
        "format": "store-account-export/1",
        "exported_at": utcnow().isoformat(),
        "account": {
            "id": str(account.id),
            "username": account.username,
            "email": account.email,
            "email_verified_at": _when(account.email_verified_at),
            "display_name": account.display_name,
            "created_at": _when(account.created_at),
            "terms_accepted_at": _when(account.terms_accepted_at),
            "password_changed_at": _when(account.password_changed_at),
            "two_factor_enabled_at": _when(account.totp_enabled_at),
            "is_admin": account.is_admin,
        },
        "organizations": [
            {"slug": org.slug, "name": org.name, "role": role}
            for org, role in accounts.organizations_of(session, account)
        ],
        "invitations": [
            {
                "organization": i.organization.slug,
                "role": i.role,
                "created_at": _when(i.created_at),
            }
            for i in accounts.pending_invitations(session, account)
        ],
        "notification_preferences": mail_service.preferences(session, account),
        "tokens": [
            {
                "kind": t.kind,
                "name": t.name,
                "prefix": t.prefix,
                "scopes": list(t.scopes),
                "client": t.client,
                "created_at": _when(t.created_at),
                "expires_at": _when(t.expires_at),
                "last_used_at": _when(t.last_used_at),
                "revoked_at": _when(t.revoked_at),
            }
            for t in tokens
        ],
        "sessions": [
            {
                "user_agent": s.user_agent,
                "address": s.address,
                "created_at": _when(s.created_at),
                "last_seen_at": _when(s.last_seen_at),
                "ended_at": _when(s.ended_at),
            }
            for s in web_sessions
        ],
        "orders": [
            {
                "id": str(o.id),
                "product": o.product.repository,
                "tier": o.tier.slug,
                "kind": o.kind,
                "status": o.status,
                "amount_minor": o.amount_minor,
                "tax_minor": o.tax_minor,
                "refunded_minor": o.refunded_minor,
                "currency": o.currency,
                "receipt_number": o.receipt_number,
                "tax_country": o.tax_country,
                "vat_id": o.vat_id,
                "created_at": _when(o.created_at),
                "paid_at": _when(o.paid_at),
            }
            for o in orders
        ],
        "subscriptions": [
            {
                "id": str(s.id),
                "product": s.product.repository,
                "tier": s.tier.slug,
                "status": s.status,
                "amount_minor": s.amount_minor,
                "currency": s.currency,
                "current_period_end": _when(s.current_period_end),
                "cancel_at_period_end": s.cancel_at_period_end,
                "created_at": _when(s.created_at),
            }
            for s in subscriptions
        ],
        "entitlements": [
            {
                "id": str(e.id),
                "product": e.product.repository,
                "tier": e.tier.slug,
                "source": e.source,
                "status": e.status,
                "starts_at": _when(e.starts_at),
                "ends_at": _when(e.ends_at),
            }
            for e in held_list
        ],
        "licenses": [
            {
                "id": str(d.id),
                "entitlement": str(d.entitlement_id),
                "issued_at": _when(d.issued_at),
                "expires_at": _when(d.expires_at),
                "revoked_at": _when(d.revoked_at),
            }
            for d in documents
        ],
        "mail": [
            {
                "subject": m.subject,
                "to": m.to_addr,
                "status": m.status,
                "created_at": _when(m.created_at),
                "sent_at": _when(m.sent_at),
            }
            for m in messages
        ],
        "activity": [
            {"at": _when(e.at), "action": e.action, "target": e.target_type} for e in events
        ],
    }
