"""Accounts, organizations, memberships, invitations and access tokens.

Services take the session first and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import security, validation
from store.accounts import sessions
from store.accounts.models import (
    AccessToken,
    Account,
    AccountToken,
    Invitation,
    Membership,
    Namespace,
    Organization,
)
from store.audit import service as audit
from store.config import Settings
from store.db import lock_row, utcnow
from store.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed

ROLES = ("viewer", "finance", "editor", "owner")
# What each role may do besides its own extras: finance sees what a viewer sees, plus the
# organization's revenue (REVENUE_ROLES), and never edits or pushes.
_RANK = {"viewer": 0, "finance": 0, "editor": 1, "owner": 2}
REVENUE_ROLES = frozenset(("owner", "finance"))
# Tokens people create. Refresh tokens are issued by the registry's token endpoint only,
# from a log-in they are bounded by (store.registry.refresh).
TOKEN_SCOPES = {
    "personal": ("pull", "push", "api"),
    "robot": ("pull", "push"),
}
# last_used_at is written at most this often, so hot credential checks do not write each time.
_LAST_USED_RESOLUTION = timedelta(minutes=1)


# --- accounts -------------------------------------------------------------------------


def create_account(
    session: Session,
    *,
    username: str,
    email: str,
    password: str,
    display_name: str = "",
    is_admin: bool = False,
    terms_accepted: bool = False,
    email_verified: bool = False,
) -> Account:
    """A new account; ``terms_accepted`` records that its owner accepted the store's terms
    of service and privacy policy (the sign-up form asks). ``email_verified`` is for
    accounts an operator makes (the operator vouches for the address); people who sign up
    confirm theirs with a link."""
    username = validation.username(username.lower())
    email = validation.email(email)
    validation.password(password)
    display_name = validation.text(
        display_name, what="Display name", max_len=120, field="display_name"
    )
    if namespace_taken(session, username):
        raise Conflict(
            f"The username '{username}' is taken", code="username_taken", field="username"
        )
    if session.scalar(select(Account.id).where(Account.email == email)):
        raise Conflict(
            "An account with this e-mail address exists", code="email_taken", field="email"
        )
    account = Account(
        username=username,
        email=email,
        display_name=display_name or username,
        password_hash=security.hash_password(password),
        is_admin=is_admin,
        terms_accepted_at=utcnow() if terms_accepted else None,
        email_verified_at=utcnow() if email_verified else None,
    )
    _claim(
        session,
        account,
        Namespace(name=username, kind="user", account=account),
        Conflict(f"The username '{username}' is taken", code="username_taken", field="username"),
    )
    return account


def namespace_taken(session: Session, name: str) -> bool:
    """A username or organization slug holds the name (one namespace for both)."""
    return session.get(Namespace, name) is not None or bool(
        session.scalar(
            select(Account.id)
            .where(Account.username == name)
            .union_all(select(Organization.id).where(Organization.slug == name))
            .limit(1)
        )
    )


def _claim(
    session: Session, owner: Account | Organization, row: Namespace, taken: Conflict
) -> None:
    """Insert the owner and its namespace row together, in a savepoint: a name claimed at
    the same instant by another process (as a username or a slug) is a Conflict, not a 500."""
    try:
        with session.begin_nested():
            session.add(owner)
            session.flush()
            session.add(row)
            session.flush()
    except IntegrityError:
        raise taken from None


def signup_problems(
    session: Session, *, username: str, email: str, password: str, display_name: str = ""
) -> dict[str, str]:
    """Everything wrong with a sign-up at once, by field (create_account checks the same)."""
    problems: dict[str, str] = {}
    checks = (
        ("username", lambda: validation.username(username.lower())),
        ("email", lambda: validation.email(email)),
        ("password", lambda: validation.password(password)),
        (
            "display_name",
            lambda: validation.text(
                display_name, what="Display name", max_len=120, field="display_name"
            ),
        ),
    )
    for field, check in checks:
        try:
            check()
        except ValidationFailed as exc:
            problems[field] = exc.detail
    if "username" not in problems and namespace_taken(session, username.lower()):
        problems["username"] = f"The username '{username.lower()}' is taken"
    if "email" not in problems and session.scalar(
        select(Account.id).where(Account.email == email.strip().lower())
    ):
        problems["email"] = "An account with this e-mail address exists"
    return problems


def get_account(session: Session, account_id: uuid.UUID) -> Account:
    account = session.get(Account, account_id)
    if account is None:
        raise NotFound("No such account")
    return account


def find_account(session: Session, username_or_email: str) -> Account | None:
    key = username_or_email.strip().lower()
    column = Account.email if "@" in key else Account.username
    return session.scalar(select(Account).where(column == key))


def get_account_by_username(session: Session, username: str) -> Account:
    account = session.scalar(select(Account).where(Account.username == username.strip().lower()))
    if account is None:
        raise NotFound(f"No account named '{username}'", field="username")
    return account


def authenticate(session: Session, *, login: str, password: str) -> Account:
    """The active account with this username or e-mail and password; Unauthorized otherwise."""
    account = find_account(session, login)
    if account is None:
        security.burn_password_check(password)
        raise Unauthorized("Incorrect username or password", code="bad_credentials")
    if not security.verify_password(account.password_hash, password):
        raise Unauthorized("Incorrect username or password", code="bad_credentials")
    if not account.is_active:
        raise Forbidden("This account is disabled", code="account_disabled")
    if security.password_needs_rehash(account.password_hash):
        account.password_hash = security.hash_password(password)
    return account


def change_password(session: Session, *, account: Account, current: str, new: str) -> None:
    if not security.verify_password(account.password_hash, current):
        # Not a 401: the caller is authenticated; the form field is wrong.
        raise ValidationFailed(
            "The current password is not correct", code="wrong_password", field="current_password"
        )
    set_password(session, account=account, password=new)


def set_password(session: Session, *, account: Account, password: str) -> None:
    validation.password(password)
    account.password_hash = security.hash_password(password)
    account.password_changed_at = utcnow()
    session.flush()  # the account row first (credentials made from credentials, below)
    revoke_refresh_tokens(
        session, AccessToken.account_id == account.id, account.password_changed_at
    )
    session.flush()
    sessions.end_all_sessions(session, account, reason="password")
    # Links mailed before end with the old password: a change of address was asked by
    # whoever knew it (perhaps a thief the owner is shutting out), and a reset link is for
    # whoever reads the mailbox.
    session.execute(
        update(AccountToken)
        .where(
            AccountToken.account_id == account.id,
            AccountToken.purpose.in_(("email", "reset")),
            AccountToken.used_at.is_(None),
        )
        .values(used_at=account.password_changed_at)
        .execution_options(synchronize_session=False)
    )


def set_display_name(session: Session, *, account: Account, display_name: str) -> Account:
    """Change the name shown for the account (empty: the username)."""
    name = validation.text(display_name, what="Display name", max_len=120, field="display_name")
    account.display_name = name or account.username
    session.flush()
    return account


def require_verified_email(account: Account, what: str) -> None:
    """Refuse ``what`` until the account's address is confirmed (administrators excepted)."""
    if account.email_verified_at is None and not account.is_admin:
        raise Forbidden(
            f"Confirm your e-mail address before {what}: open the link we sent to "
            f"{account.email}, or ask for a new one in your account settings",
            code="email_unverified",
        )


def list_accounts(session: Session, *, query: str = "") -> list[Account]:
    stmt = select(Account).order_by(Account.username)
    if query:
        like = f"%{query.lower()}%"
        stmt = stmt.where(Account.username.like(like) | Account.email.like(like))
    return list(session.scalars(stmt))


def _ensure_not_last_admin(session: Session, account: Account) -> None:
    if not (account.is_admin and account.is_active):
        return
    others = session.scalar(
        select(func.count()).where(
            Account.is_admin.is_(True), Account.is_active.is_(True), Account.id != account.id
        )
    )
    if not others:
        raise Conflict("This is the last active administrator; make another one first")


def set_admin(
    session: Session, *, account: Account, is_admin: bool, actor: Account | None
) -> Account:
    """Grant or remove administrator. ``actor`` is who did it (recorded in the audit log);
    None only for the store itself (bootstrapping the first administrator)."""
    if not is_admin:
        _ensure_not_last_admin(session, account)
    account.is_admin = is_admin
    session.flush()
    audit.record(
        session,
        action="admin.set_admin",
        actor=actor,
        target=account,
        details={"username": account.username, "is_admin": is_admin},
    )
    return account


def set_active(
    session: Session, *, account: Account, active: bool, actor: Account | None
) -> Account:
    """Enable or disable an account; ``actor`` is recorded in the audit log."""
    if not active:
        _ensure_not_last_admin(session, account)
    account.is_active = active
    if not active:
        session.flush()  # the account row first (credentials made from credentials, below)
        revoke_refresh_tokens(session, AccessToken.account_id == account.id, utcnow())
        sessions.end_all_sessions(session, account, reason="disabled")
    session.flush()
    audit.record(
        session,
        action="admin.set_active",
        actor=actor,
        target=account,
        details={"username": account.username, "is_active": active},
    )
    return account


# --- organizations and memberships ----------------------------------------------------


def create_organization(
    session: Session,
    *,
    owner: Account,
    slug: str,
    name: str,
    description: str = "",
    website: str = "",
) -> Organization:
    slug = validation.namespace(slug.lower())
    name = validation.text(name, what="Name", max_len=120, required=True, field="name")
    taken = Conflict(f"The namespace '{slug}' is taken", code="namespace_taken", field="slug")
    if namespace_taken(session, slug):
        raise taken
    org = Organization(
        slug=slug,
        name=name,
        description=validation.text(
            description, what="Description", max_len=5000, field="description", lines=True
        ),
        website=validation.optional_url(website, what="Website", field="website"),
    )
    _claim(session, org, Namespace(name=slug, kind="organization", organization=org), taken)
    session.add(Membership(organization_id=org.id, account_id=owner.id, role="owner"))
    session.flush()
    return org


def update_organization(
    session: Session,
    *,
    org: Organization,
    actor: Account,
    name: str | None = None,
    description: str | None = None,
    website: str | None = None,
) -> Organization:
    require_role(session, actor, org, "owner")
    if name is not None:
        org.name = validation.text(name, what="Name", max_len=120, required=True, field="name")
    if description is not None:
        org.description = validation.text(
            description, what="Description", max_len=5000, field="description", lines=True
        )
    if website is not None:
        org.website = validation.optional_url(website, what="Website", field="website")
    session.flush()
    return org


def get_organization(session: Session, slug: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.slug == slug.strip().lower()))
    if org is None:
        raise NotFound(f"No organization named '{slug}'")
    return org


def list_organizations(session: Session, *, verified: bool | None = None) -> list[Organization]:
    stmt = select(Organization).order_by(Organization.slug)
    if verified is True:
        stmt = stmt.where(Organization.verified_at.is_not(None))
    elif verified is False:
        stmt = stmt.where(Organization.verified_at.is_(None))
    return list(session.scalars(stmt))


def organizations_of(session: Session, account: Account) -> list[tuple[Organization, str]]:
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.account_id == account.id)
        .order_by(Organization.slug)
    )
    return [(org, role) for org, role in rows]


def role_of(session: Session, account: Account | None, org: Organization) -> str | None:
    if account is None:
        return None
    return session.scalar(
        select(Membership.role).where(
            Membership.organization_id == org.id, Membership.account_id == account.id
        )
    )


def has_role(session: Session, account: Account | None, org: Organization, minimum: str) -> bool:
    if account is None:
        return False
    if account.is_admin:
        return True
    role = role_of(session, account, org)
    return role is not None and _RANK.get(role, -1) >= _RANK[minimum]


def may_see_revenue(session: Session, account: Account | None, org: Organization) -> bool:
    """Sales and revenue of an organization: its owners, its finance role and admins."""
    if account is None:
        return False
    return account.is_admin or role_of(session, account, org) in REVENUE_ROLES


def require_revenue(session: Session, account: Account | None, org: Organization) -> None:
    if account is None:
        raise Unauthorized("Log in first")
    if not may_see_revenue(session, account, org):
        raise Forbidden(f"Sales of '{org.slug}' are for its owners and its finance role")


def require_role(
    session: Session, account: Account | None, org: Organization, minimum: str
) -> None:
    if account is None:
        raise Unauthorized("Log in first")
    if not has_role(session, account, org, minimum):
        raise Forbidden(f"You need the {minimum} role in '{org.slug}' to do this")


def members(session: Session, org: Organization) -> list[Membership]:
    return list(
        session.scalars(
            select(Membership)
            .join(Account, Account.id == Membership.account_id)
            .where(Membership.organization_id == org.id)
            .order_by(Account.username)
        )
    )


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationFailed(f"Role must be one of {', '.join(ROLES)}", field="role")
    return role


def invite_member(
    session: Session,
    *,
    org: Organization,
    actor: Account,
    username: str,
    role: str,
    settings: Settings | None,
) -> Invitation:
    """Invite an account (owners only); ``settings`` write the invitation mailed to it (None:
    not mailed)."""
    require_role(session, actor, org, "owner")
    _check_role(role)
    invitee = get_account_by_username(session, username)
    if role_of(session, invitee, org) is not None:
        raise Conflict(f"{invitee.username} is already a member of {org.slug}")
    pending = session.scalar(
        select(Invitation).where(
            Invitation.organization_id == org.id,
            Invitation.account_id == invitee.id,
            Invitation.accepted_at.is_(None),
            Invitation.declined_at.is_(None),
        )
    )
    from store.mail import notices

    if pending is not None:
        pending.role = role
        pending.invited_by_id = actor.id  # now this owner's invitation (see answer_invitation)
        session.flush()
        notices.invitation(session, settings, invitation=pending)
        return pending
    invitation = Invitation(
        organization_id=org.id, account_id=invitee.id, role=role, invited_by_id=actor.id
    )
    session.add(invitation)
    session.flush()
    notices.invitation(session, settings, invitation=invitation)
    return invitation


def add_member(
    session: Session, *, org: Organization, actor: Account, account: Account, role: str
) -> Membership:
    """Add an account directly (administrators and operators; members join by invitation)."""
    if not actor.is_admin:
        raise Forbidden("Only administrators add members directly; invite them instead")
    _check_role(role)
    if role_of(session, account, org) is not None:
        raise Conflict(f"{account.username} is already a member of {org.slug}")
    membership = Membership(organization_id=org.id, account_id=account.id, role=role)
    session.add(membership)
    session.flush()
    return membership


def pending_invitations(session: Session, account: Account) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.account_id == account.id,
                Invitation.accepted_at.is_(None),
                Invitation.declined_at.is_(None),
            )
            .order_by(Invitation.created_at)
        )
    )


def org_invitations(session: Session, org: Organization) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(
                Invitation.organization_id == org.id,
                Invitation.accepted_at.is_(None),
                Invitation.declined_at.is_(None),
            )
            .order_by(Invitation.created_at)
        )
    )


def answer_invitation(
    session: Session, *, invitation_id: uuid.UUID, account: Account, accept: bool
) -> Invitation:
    invitation = session.get(Invitation, invitation_id)
    if invitation is None or invitation.account_id != account.id:
        raise NotFound("No such invitation")
    if not invitation.pending:
        raise Conflict("This invitation was already answered")
    now = utcnow()
    if accept:
        # An invitation is only as good as its inviter's ownership: an owner removed (or
        # demoted, or deleted) cannot bring in accounts they invited before, as owners or
        # otherwise. Another owner's invitation of the same account replaces the inviter.
        inviter = (
            session.get(Account, invitation.invited_by_id) if invitation.invited_by_id else None
        )
        if inviter is None or not has_role(session, inviter, invitation.organization, "owner"):
            raise Conflict(
                "Whoever sent this invitation is no longer an owner of "
                f"{invitation.organization.slug}: ask an owner to invite you again",
                code="invitation_void",
            )
        invitation.accepted_at = now
        if role_of(session, account, invitation.organization) is None:
            session.add(
                Membership(
                    organization_id=invitation.organization_id,
                    account_id=account.id,
                    role=invitation.role,
                )
            )
    else:
        invitation.declined_at = now
    session.flush()
    return invitation


def owner_count(session: Session, org: Organization) -> int:
    """The organization's owners, counted under a lock of its row (PostgreSQL; SQLite's
    writers already take turns): two owners leaving, or demoting each other, at the same
    moment are counted one after the other, so the second sees the first's change and the
    organization keeps an owner."""
    lock_row(session, Organization, org.id, populate=False)
    return (
        session.scalar(
            select(func.count()).where(
                Membership.organization_id == org.id, Membership.role == "owner"
            )
        )
        or 0
    )


def change_role(
    session: Session, *, org: Organization, actor: Account, username: str, role: str
) -> Membership:
    require_role(session, actor, org, "owner")
    _check_role(role)
    target = get_account_by_username(session, username)
    membership = session.scalar(
        select(Membership).where(
            Membership.organization_id == org.id, Membership.account_id == target.id
        )
    )
    if membership is None:
        raise NotFound(f"{target.username} is not a member of {org.slug}")
    if membership.role == "owner" and role != "owner" and owner_count(session, org) == 1:
        raise Conflict("An organization needs at least one owner")
    membership.role = role
    session.flush()
    return membership


def remove_member(session: Session, *, org: Organization, actor: Account, username: str) -> None:
    target = get_account_by_username(session, username)
    if target.id != actor.id:  # members may always leave
        require_role(session, actor, org, "owner")
    membership = session.scalar(
        select(Membership).where(
            Membership.organization_id == org.id, Membership.account_id == target.id
        )
    )
    if membership is None:
        raise NotFound(f"{target.username} is not a member of {org.slug}")
    if membership.role == "owner" and owner_count(session, org) == 1:
        raise Conflict("An organization needs at least one owner")
    session.delete(membership)
    session.flush()


def request_verification(session: Session, *, org: Organization, actor: Account) -> Organization:
    require_role(session, actor, org, "owner")
    if org.verified:
        raise Conflict(f"{org.slug} is already verified")
    org.verification_requested_at = utcnow()
    session.flush()
    audit.record(session, action="publisher.verification_request", actor=actor, target=org, org=org)
    return org


def set_verified(
    session: Session,
    *,
    org: Organization,
    actor: Account,
    verified: bool,
    note: str = "",
    settings: Settings | None,
) -> Organization:
    """An administrator's decision, mailed to the owners when ``settings`` are given."""
    if not actor.is_admin:
        raise Forbidden("Only administrators verify publishers")
    org.verified_at = utcnow() if verified else None
    org.verification_requested_at = None
    org.verification_note = validation.text(note, what="Note", max_len=2000, lines=True)
    session.flush()
    audit.record(
        session,
        action="publisher.verify" if verified else "publisher.unverify",
        actor=actor,
        target=org,
        org=org,
        details={"note": org.verification_note},
    )
    from store.mail import notices

    notices.publisher_verification(session, settings, org=org, verified=verified)
    return org


# --- access tokens --------------------------------------------------------------------


@dataclass
class IssuedToken:
    token: AccessToken
    secret: str  # shown once


def _check_scopes(kind: str, scopes: list[str]) -> list[str]:
    allowed = TOKEN_SCOPES[kind]
    cleaned = sorted({s.strip() for s in scopes if s.strip()})
    if not cleaned:
        raise ValidationFailed(f"Choose at least one scope ({', '.join(allowed)})", field="scopes")
    bad = [s for s in cleaned if s not in allowed]
    if bad:
        raise ValidationFailed(
            f"Unknown scope {', '.join(bad)} for a {kind} token; allowed: {', '.join(allowed)}",
            field="scopes",
        )
    return cleaned


def create_token(
    session: Session,
    *,
    kind: str,
    name: str,
    scopes: list[str],
    created_by: Account,
    account: Account | None = None,
    org: Organization | None = None,
    expires_at: datetime | None = None,
    via: AccessToken | None = None,
) -> IssuedToken:
    """Issue a personal (account) or robot (organization) token.

    ``via``: the access token the request was made with (the JSON API). A token made with
    a token never exceeds it: scopes it does not have are refused, and it expires no later
    than it does (a leaked ``api`` token cannot mint push rights or outlive itself)."""
    if kind not in TOKEN_SCOPES:
        raise ValidationFailed("Unknown token kind")
    # The token used, re-read and held until this transaction ends: a revocation of it at
    # the same instant (another process) either waits for this token and revokes it too,
    # or has revoked it already and this request is refused as one a moment later would be
    # (lock_source_token).
    # (The source is the first row this transaction locks: an account's deletion locks the
    # account's tokens before its organizations and the audit log, store.privacy.lifecycle.)
    if via is not None and lock_source_token(session, via.id, utcnow()) is None:
        raise Unauthorized("The access token is unknown, expired or revoked", code="bad_token")
    if kind == "robot":
        if org is None:
            raise ValidationFailed("A robot token belongs to an organization")
        require_role(session, created_by, org, "owner")
        account = None
    else:
        account = account or created_by
        if account.id != created_by.id and not created_by.is_admin:
            raise Forbidden("You can only create tokens for yourself")
        org = None
    name = validation.text(name, what="Token name", max_len=100, required=True, field="name")
    scopes = _check_scopes(kind, scopes)
    if expires_at is not None and expires_at <= utcnow():
        raise ValidationFailed("The expiry must be in the future", field="expires_at")
    if via is not None:
        beyond = [s for s in scopes if s not in via.scopes]
        if beyond:
            raise Forbidden(
                f"The token used has no {', '.join(repr(s) for s in beyond)} scope, so it "
                "cannot give one",
                code="insufficient_scope",
                field="scopes",
            )
        if via.expires_at is not None and (expires_at is None or expires_at > via.expires_at):
            expires_at = via.expires_at
    secret = security.generate_token(kind)
    token = AccessToken(
        kind=kind,
        account_id=account.id if account else None,
        organization_id=org.id if org else None,
        name=name,
        prefix=secret[:12],
        token_hash=security.hash_token(secret),
        scopes=scopes,
        created_by_id=created_by.id,
        expires_at=expires_at,
        # Made with a token: it dies with it (revoke_token revokes what was made from it).
        source_kind="token" if via is not None else None,
        source_token_id=via.id if via is not None else None,
    )
    session.add(token)
    session.flush()
    audit.record(
        session,
        action="token.create",
        actor=created_by,
        target=token,
        org=org,
        details={"kind": kind, "name": name, "prefix": token.prefix, "scopes": scopes},
    )
    return IssuedToken(token=token, secret=secret)


# --- credentials made from credentials ---------------------------------------------------
#
# A credential made from another (a token created with a token, a registry refresh token
# from a personal access token, a license or a password log-in) dies with its source, also
# when the two happen at the same instant in two processes. Under PostgreSQL's READ
# COMMITTED a revocation's SELECT of the children does not see a child inserted but not yet
# committed, so both sides take the source row:
#
# - making a credential locks the source (``SELECT ... FOR SHARE``, re-read in the same
#   transaction) and checks it is still usable there, refusing as a revoked source is
#   refused;
# - a revocation updates the source row first, and only then collects what was made from
#   it, with statements that start after that row lock is held.
#
# So a revocation either waits for the mint to commit and then finds its credential, or the
# mint waits for the revocation and finds the source revoked. On SQLite every transaction
# that writes holds the database's write lock from its start (store.db), so the re-check
# inside the minting transaction is what counts there.


def lock_source_token(session: Session, token_id: uuid.UUID, now: datetime) -> AccessToken | None:
    """The token ``token_id`` re-read and locked until this transaction ends, when it can
    still be a source (not revoked or expired, its owner active); None otherwise."""
    token = lock_row(session, AccessToken, token_id, mode="share")
    if token is None or not token.is_usable(now):
        return None
    if token.account_id is not None and not session.scalar(
        select(Account.is_active).where(Account.id == token.account_id)
    ):
        return None
    return token


def revoke_refresh_tokens(session: Session, which: Any, now: datetime) -> int:
    """Revoke the (still live) refresh tokens ``which`` selects: their source ended; how
    many. The caller has updated the source row already (see above).

    Repeated until nothing is left: a statement that waited for a token being rotated at
    the same instant does not see the token that rotation made; the next one does."""
    revoked = 0
    while True:
        result = session.execute(
            update(AccessToken)
            .where(which, AccessToken.kind == "refresh", AccessToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
        count = int(getattr(result, "rowcount", 0) or 0)
        if not count:
            return revoked
        revoked += count


def revoke_descendants(session: Session, token_ids: list[uuid.UUID], now: datetime) -> int:
    """Revoke the live tokens made from ``token_ids`` (``source_token_id``: refresh tokens
    of their log-ins, tokens created with them), and theirs, to any depth; how many.

    The caller has revoked ``token_ids`` (updated their rows) already: each level's SELECT
    starts after the rows of the level above are locked, so it sees every child made from
    them, also one committed while this transaction waited (see above)."""
    session.flush()
    revoked, parents = 0, list(token_ids)
    while parents:
        children = list(
            session.scalars(
                select(AccessToken.id).where(
                    AccessToken.source_token_id.in_(parents), AccessToken.revoked_at.is_(None)
                )
            )
        )
        if children:
            session.execute(
                update(AccessToken)
                .where(AccessToken.id.in_(children), AccessToken.revoked_at.is_(None))
                .values(revoked_at=now)
                .execution_options(synchronize_session=False)
            )
        revoked += len(children)
        parents = children
    return revoked


def list_tokens(
    session: Session,
    *,
    account: Account | None = None,
    org: Organization | None = None,
    include_revoked: bool = False,
) -> list[AccessToken]:
    stmt = select(AccessToken).order_by(AccessToken.created_at.desc())
    if org is not None:
        stmt = stmt.where(
            AccessToken.organization_id == org.id, AccessToken.kind.in_(("robot", "refresh"))
        )
    elif account is not None:
        stmt = stmt.where(
            AccessToken.account_id == account.id, AccessToken.kind.in_(("personal", "refresh"))
        )
    if not include_revoked:
        # A rotated refresh token is spent (the next of its family is listed instead), and
        # an expired one is dead.
        stmt = stmt.where(
            AccessToken.revoked_at.is_(None),
            AccessToken.rotated_at.is_(None),
            or_(
                AccessToken.kind != "refresh",
                AccessToken.expires_at.is_(None),
                AccessToken.expires_at > utcnow(),
            ),
        )
    return list(session.scalars(stmt))


def get_token(session: Session, token_id: uuid.UUID) -> AccessToken:
    token = session.get(AccessToken, token_id)
    if token is None:
        raise NotFound("No such token")
    return token


def revoke_token(session: Session, *, token: AccessToken, actor: Account) -> AccessToken:
    if token.organization is not None:
        require_role(session, actor, token.organization, "owner")
    elif token.account_id != actor.id and not actor.is_admin:
        raise NotFound("No such token")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()  # the source row first: a mint from it at this instant waits, or we do
        # No token outlives the token it was made from (a refresh token from its log-in, a
        # token created with it through the API, and theirs); revoking a refresh token
        # ends every token rotated from the same log-in.
        revoke_descendants(session, [token.id], token.revoked_at)
        if token.family_id is not None:
            revoke_refresh_tokens(
                session, AccessToken.family_id == token.family_id, token.revoked_at
            )
        audit.record(
            session,
            action="token.revoke",
            actor=actor,
            target=token,
            org=token.organization_id,
            details={"kind": token.kind, "name": token.name, "prefix": token.prefix},
        )
    session.flush()
    return token


def resolve_token(session: Session, secret: str) -> AccessToken | None:
    """The usable token with this secret, or None (unknown, malformed, expired, revoked).

    It only reads: record the use afterwards with ``touch_token`` when ``use_is_stale``."""
    if security.token_kind(secret) is None:
        return None
    token = session.scalar(
        select(AccessToken).where(AccessToken.token_hash == security.hash_token(secret))
    )
    if token is None or not token.is_usable(utcnow()):
        return None
    owner = token.account
    if owner is not None and not owner.is_active:
        return None
    return token


def use_is_stale(token: AccessToken, now: datetime) -> bool:
    """Whether ``last_used_at`` is older than its resolution (written at most once a minute)."""
    return token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION


def touch_token(session: Session, *, token_id: uuid.UUID, now: datetime) -> None:
    """Record a use of the token, unless one within the resolution was recorded already (a
    single conditional UPDATE: concurrent requests with one token write it once)."""
    session.execute(
        update(AccessToken)
        .where(
            AccessToken.id == token_id,
            or_(
                AccessToken.last_used_at.is_(None),
                AccessToken.last_used_at < now - _LAST_USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
