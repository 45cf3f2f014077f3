"""Registry refresh tokens (the "identity token" `docker login` keeps), bounded by their source.

A refresh token is issued by ``/token`` when a client asks for offline access, and only from
a log-in that may itself reach the registry:

- a **password** log-in: the registry scopes ``pull`` and ``push`` (what the account may do
  is decided per request, as for the password itself);
- a **personal access token**: that token's registry scopes and never beyond its expiry; a
  token without ``pull`` or ``push`` (an ``api``-only token) gets no refresh token;
- a **license**: ``pull`` on the licensed product's repository, never beyond the license's
  expiry.

Robot tokens get none (they are long-lived credentials already).

Every use re-checks the source: the token dies when the source token or license is revoked
or expires, when the account's password changes after the token was made, when the account
is disabled, when a password log-in's account turns two-factor sign-in on (revoked then, so
turning it off again does not revive it), and when its entitlement stops being usable.
The expiry slides by the configured lifetime on each use (``STORE_REFRESH_TOKEN_DAYS``,
default 30) up to an absolute cap from the log-in (``STORE_REFRESH_TOKEN_MAX_DAYS``, default
90) and the source's own expiry.

**Rotation.** A client that keeps refresh tokens says so by asking for offline access again
on the refresh grant (``access_type=offline``, as distribution's client does): it gets a new
refresh token of the same family and the one it sent is marked rotated. Presenting a rotated
token again is a reuse (a copy is in someone else's hands): every token of the family is
revoked. Two requests rotating one token at the same instant (two processes) rotate it
once: the second is that reuse. Clients that do not ask (containers/image, which keeps the
identity token in auth.json and never stores a new one) keep using theirs until it expires,
unrotated.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account
from store.audit import service as audit
from store.config import Settings
from store.db import lock_row
from store.licensing.models import License
from store.licensing.usable import usable_until
from store.registry.grants import Principal

REGISTRY_SCOPES = frozenset(("pull", "push"))
SOURCES = ("password", "personal", "license")


class RefreshRefused(Exception):
    """The refresh token cannot be used; the text says why (the client hears 401)."""

    def __init__(self, message: str, *, reused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reused = reused


@dataclass(frozen=True)
class Redeemed:
    principal: Principal
    secret: str | None  # the rotated token, when the client asked for one


def lifetimes(settings: Settings) -> tuple[timedelta, timedelta]:
    """(sliding lifetime, absolute cap)."""
    sliding = timedelta(days=settings.refresh_token_days)
    return sliding, max(sliding, timedelta(days=settings.refresh_token_max_days))


def _earliest(*moments: datetime | None) -> datetime:
    return min(m for m in moments if m is not None)


def _client(client_id: str) -> str:
    cleaned = "".join(ch for ch in client_id if ch.isprintable()).strip()
    return cleaned[:100] or "unknown client"


def issue(
    session: Session,
    settings: Settings,
    principal: Principal,
    *,
    client_id: str,
    now: datetime,
) -> str | None:
    """A refresh token for the log-in behind ``principal``, or None when its source may not
    keep one (a robot, a token without registry scopes, a source about to expire)."""
    sliding, cap = lifetimes(settings)
    source_expiry: datetime | None = None
    account_id = principal.account_id
    org_id: uuid.UUID | None = None
    source_token_id = source_license_id = None
    # The source is re-read and locked until this transaction commits: a revocation of it
    # at the same instant (another process) waits and then revokes this token too, or came
    # first and no token is made (accounts.service, "credentials made from credentials").
    if principal.kind == "account" and principal.token_id is None:
        if not _account_may_keep(session, account_id, password=True):
            return None
        kind, scopes = "password", REGISTRY_SCOPES
    elif principal.kind == "account" and principal.extra.get("token_kind") == "personal":
        if not _account_may_keep(session, account_id, password=False):
            return None
        source = (
            accounts.lock_source_token(session, principal.token_id, now)
            if principal.token_id is not None
            else None
        )
        if source is None:
            return None
        kind, scopes = "personal", frozenset(source.scopes) & REGISTRY_SCOPES
        source_token_id, source_expiry = source.id, source.expires_at
    elif principal.kind == "license" and "license_id" in principal.extra:
        license = lock_row(session, License, principal.extra["license_id"], mode="share")
        if license is None or license.revoked_at is not None:
            return None
        entitlement = license.entitlement
        if not entitlement.is_usable(now):
            return None
        kind, scopes = "license", frozenset(("pull",))
        source_license_id, source_expiry = license.id, license.expires_at
        account_id, org_id = entitlement.account_id, entitlement.organization_id
    else:
        return None  # robots, the sync credential, refresh tokens themselves
    if not scopes or (source_expiry is not None and source_expiry <= now):
        return None
    absolute = _earliest(now + cap, source_expiry)
    return _create(
        session,
        kind=kind,
        scopes=scopes,
        account_id=account_id,
        org_id=org_id,
        source_token_id=source_token_id,
        source_license_id=source_license_id,
        family_id=uuid.uuid4(),
        client=_client(client_id),
        expires_at=_earliest(now + sliding, absolute),
        absolute=absolute,
        now=now,
    )


def _account_may_keep(session: Session, account_id: uuid.UUID | None, *, password: bool) -> bool:
    """Whether the account (locked until the transaction ends) may keep a registry log-in: it
    is active, and for a password log-in, two-factor sign-in is off."""
    account = lock_row(session, Account, account_id, mode="share") if account_id else None
    if account is None or not account.is_active:
        return False
    return not (password and account.totp_enabled_at is not None)


def _lock_sources(session: Session, token: AccessToken, now: datetime) -> None:
    """Before a rotation makes the next token of a family: lock what the family was made
    from (the account, the personal access token, the license), so that a revocation of it
    at the same instant either waits and finds the new token, or is seen by ``_check``."""
    if token.account_id is not None:
        lock_row(session, Account, token.account_id, mode="share")
    if token.source_token_id is not None:
        accounts.lock_source_token(session, token.source_token_id, now)
    if token.source_license_id is not None:
        lock_row(session, License, token.source_license_id, mode="share")


def _create(
    session: Session,
    *,
    kind: str,
    scopes: frozenset[str],
    account_id: uuid.UUID | None,
    org_id: uuid.UUID | None,
    source_token_id: uuid.UUID | None,
    source_license_id: uuid.UUID | None,
    family_id: uuid.UUID,
    client: str,
    expires_at: datetime,
    absolute: datetime,
    now: datetime,
) -> str:
    secret = security.generate_token("refresh")
    token = AccessToken(
        kind="refresh",
        account_id=account_id,
        organization_id=org_id,
        name=f"registry log-in ({client})"[:100],
        prefix=secret[:12],
        token_hash=security.hash_token(secret),
        scopes=sorted(scopes),
        created_at=now,
        created_by_id=account_id,
        expires_at=expires_at,
        source_kind=kind,
        source_token_id=source_token_id,
        source_license_id=source_license_id,
        family_id=family_id,
        client=client,
        absolute_expires_at=absolute,
    )
    session.add(token)
    session.flush()
    return secret


def revoke_family(session: Session, family_id: uuid.UUID, now: datetime) -> int:
    """Revoke every live token of the family; how many (repeated until none is left: a
    token rotated at this instant by another process is found by the next statement)."""
    return accounts.revoke_refresh_tokens(session, AccessToken.family_id == family_id, now)


def redeem(
    session: Session, settings: Settings, secret: str, *, rotate: bool, now: datetime
) -> Redeemed:
    """The principal a refresh token stands for now, after checking it and its source;
    slides its expiry, or rotates it when ``rotate``. Raises :class:`RefreshRefused`; a reuse
    of a rotated token revokes its family first (the caller commits either way)."""
    if security.token_kind(secret) != "refresh":
        raise RefreshRefused("unknown or malformed refresh token")
    token = session.scalar(
        select(AccessToken).where(AccessToken.token_hash == security.hash_token(secret))
    )
    if token is None or token.kind != "refresh":
        raise RefreshRefused("unknown refresh token")
    if token.rotated_at is not None:
        _reused(session, token, now)
    if rotate:
        _lock_sources(session, token, now)
    principal, source_expiry = _check(session, token, now)
    sliding, _ = lifetimes(settings)
    absolute = _earliest(token.absolute_expires_at or token.expires_at, source_expiry)
    expires = _earliest(now + sliding, absolute)
    # The registry token made now lives no longer than this log-in (or its source) does.
    principal = dataclasses.replace(principal, expires_at=_earliest(expires, principal.expires_at))
    if not rotate:
        token.expires_at = expires
        token.last_used_at = now
        session.flush()
        return Redeemed(principal, None)
    # Spent by one conditional UPDATE: of two requests rotating it at the same instant (two
    # processes), the second finds it rotated and is the reuse it would be a moment later.
    claimed = session.execute(
        update(AccessToken)
        .where(
            AccessToken.id == token.id,
            AccessToken.rotated_at.is_(None),
            AccessToken.revoked_at.is_(None),
        )
        .values(rotated_at=now, last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    if not getattr(claimed, "rowcount", 0):
        session.refresh(token)
        if token.rotated_at is not None:
            _reused(session, token, now)
        raise RefreshRefused("this refresh token was revoked")
    session.refresh(token)
    rotated = _create(
        session,
        kind=token.source_kind or "password",
        scopes=frozenset(token.scopes),
        account_id=token.account_id,
        org_id=token.organization_id,
        source_token_id=token.source_token_id,
        source_license_id=token.source_license_id,
        family_id=token.family_id or uuid.uuid4(),
        client=token.client,
        expires_at=expires,
        absolute=absolute,
        now=now,
    )
    return Redeemed(principal, rotated)


def _reused(session: Session, token: AccessToken, now: datetime) -> NoReturn:
    """A rotated token presented again: a copy is in someone else's hands. Every token of
    its family is revoked (the caller commits) and the request refused."""
    if token.family_id is not None and revoke_family(session, token.family_id, now):
        audit.record(
            session,
            action="token.refresh_reused",
            actor=None,
            target=token,
            details={"prefix": token.prefix, "family": str(token.family_id)},
        )
    raise RefreshRefused(
        "this refresh token was already used and replaced; every token of its log-in "
        "is revoked, log in again",
        reused=True,
    )


def _check(
    session: Session, token: AccessToken, now: datetime
) -> tuple[Principal, datetime | None]:
    """The token's principal if it and its source are still good, and the source's expiry."""
    if token.revoked_at is not None:
        raise RefreshRefused("this refresh token was revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise RefreshRefused("this refresh token expired; log in again")
    if token.source_kind not in SOURCES:
        raise RefreshRefused("this refresh token has no source; log in again")
    account = session.get(Account, token.account_id) if token.account_id else None
    if account is not None:
        if not account.is_active:
            raise RefreshRefused("this account is disabled")
        if account.password_changed_at > token.created_at:
            raise RefreshRefused("the password changed since this log-in; log in again")
        if token.source_kind == "password" and account.totp_enabled_at is not None:
            # The password alone no longer signs this account in (docker cannot send the
            # second factor), so neither does a log-in kept from it.
            raise RefreshRefused(
                "this account now uses two-factor sign-in: log in with a personal access "
                "token instead of the password"
            )
    scopes = frozenset(token.scopes) & REGISTRY_SCOPES
    if token.source_kind == "license":
        return _license_principal(session, token, now, scopes)
    if account is None:
        raise RefreshRefused("this refresh token has no account")
    source_expiry = None
    if token.source_kind == "personal":
        source = token.source_token
        if source is None or source.revoked_at is not None:
            raise RefreshRefused("the access token this log-in used was revoked")
        if source.expires_at is not None and source.expires_at <= now:
            raise RefreshRefused("the access token this log-in used expired")
        scopes &= frozenset(source.scopes)
        source_expiry = source.expires_at
    if not scopes:
        raise RefreshRefused("this log-in has no registry scope")
    principal = Principal(
        kind="account",
        subject=account.username,
        account_id=account.id,
        is_admin=account.is_admin,
        token_scopes=scopes,
        token_id=token.id,
        extra={"token_kind": "refresh"},
    )
    return principal, source_expiry


def _license_principal(
    session: Session, token: AccessToken, now: datetime, scopes: frozenset[str]
) -> tuple[Principal, datetime | None]:
    license = session.get(License, token.source_license_id) if token.source_license_id else None
    if license is None:
        raise RefreshRefused("the license this log-in used is gone")
    if license.revoked_at is not None:
        raise RefreshRefused("the license this log-in used was revoked")
    if license.expires_at is not None and license.expires_at <= now:
        raise RefreshRefused("the license this log-in used expired")
    entitlement = license.entitlement
    if not entitlement.is_usable(now):
        raise RefreshRefused(
            f"the entitlement behind the license is {entitlement.effective_status(now)}"
        )
    if token.organization_id is None and token.account_id is None:
        raise RefreshRefused("this refresh token has no owner")
    principal = Principal(
        kind="license",
        subject=f"license:{entitlement.id}",
        repositories=frozenset({entitlement.product.repository}),
        token_scopes=scopes & frozenset(("pull",)),
        token_id=token.id,
        expires_at=usable_until(entitlement.ends_at, entitlement.grace_until),
        extra={"license_id": license.id, "token_kind": "refresh"},
    )
    return principal, license.expires_at
