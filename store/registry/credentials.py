"""Credentials sent to the token endpoint, resolved to a :class:`Principal`.

Resolution is a chain of resolvers (``RESOLVERS``): each looks at the Basic username and
password and either returns a principal, returns None ("not mine, ask the next one"), or
raises :class:`BadCredentials`. Built in, in order:

1. the store's own sync credential (username ``_store-sync``; no account can have it);
2. a license token sent as the password with username ``license`` (or the license id),
   verified by ``store.licensing.credentials.resolve_license_credential``;
3. access tokens (personal, organisation robot, refresh), recognised by prefix + checksum;
4. username (or e-mail) and password.

Add a kind by inserting a resolver into ``RESOLVERS``. Each built-in resolver costs one
indexed query. Password checks are argon2id (≈ 200 ms at production cost), so a successful
check is remembered for a short time in a bounded, per-process cache keyed by an HMAC of
(username, password, stored password hash): a password change changes the hash and thereby
misses the cache at once; a disabled account is refused because ``is_active`` is read on
every request. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, Uuid, bindparam, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from store import security
from store.config import Settings
from store.db import StringList, UTCDateTime
from store.registry.grants import Principal

log = logging.getLogger("store.registry.credentials")
SYNC_USERNAME = "_store-sync"
_LAST_USED_RESOLUTION = timedelta(minutes=1)
REGISTRY_TOKEN_SCOPES = frozenset(("pull", "push"))
# Refresh tokens are what `docker login`/`skopeo login` keep as the identity token.
REFRESH_TOKEN_LIFETIME = timedelta(days=90)


class BadCredentials(Exception):
    """Unknown user, wrong password, unusable token: the client hears 401 UNAUTHORIZED."""

    def __init__(self, message: str = "bad credentials") -> None:
        super().__init__(message)
        self.message = message


class AccountDisabled(BadCredentials):
    pass


@dataclass
class CredentialContext:
    # Opens a short unit of work on the database (committed on exit). Never held across an
    # await: a password check runs in the threadpool while other requests use the pool.
    connect: Callable[[], AbstractContextManager[Connection]]
    settings: Settings
    sessionmaker: sessionmaker[Session]
    cache: PasswordCache
    now: datetime
    keyring: Any = None  # the app's KeyRing (license verification reads keys through it)
    touch: list[Any] = field(default_factory=list)  # tokens whose last_used_at is stale


Resolver = Callable[[CredentialContext, str, str], Awaitable[Principal | None]]


# --- the password cache -----------------------------------------------------------------


class PasswordCache:
    """Successful password checks, remembered for ``ttl`` seconds (at most ``size`` of them).

    The key is HMAC-SHA256 under a per-process random key of (username, password, stored
    hash): the password never sits in memory in the clear, and a new hash is a new key.
    """

    def __init__(self, ttl: float = 300.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._key = os.urandom(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _digest(self, username: str, password: str, password_hash: str) -> bytes:
        message = b"\0".join((username.encode(), password.encode(), password_hash.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, username: str, password: str, password_hash: str) -> bool:
        key = self._digest(username, password, password_hash)
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            with self._lock:
                self._entries.pop(key, None)
            return False
        return True

    def remember(self, username: str, password: str, password_hash: str) -> None:
        key = self._digest(username, password, password_hash)
        with self._lock:
            self._entries[key] = time.monotonic() + self.ttl
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# --- queries (one indexed lookup each) ----------------------------------------------------

_TOKEN = text(
    """
SELECT t.id, t.kind, t.account_id, t.organization_id, t.scopes, t.expires_at,
       t.revoked_at, t.last_used_at, a.username, a.is_active, a.is_admin, o.slug AS org_slug
FROM access_tokens t
LEFT JOIN accounts a ON a.id = t.account_id
LEFT JOIN organizations o ON o.id = t.organization_id
WHERE t.token_hash = :hash
"""
).columns(
    id=Uuid(),
    account_id=Uuid(),
    organization_id=Uuid(),
    scopes=StringList(),
    expires_at=UTCDateTime(),
    revoked_at=UTCDateTime(),
    last_used_at=UTCDateTime(),
)
_TOUCH = text(
    "UPDATE access_tokens SET last_used_at = :now "
    "WHERE id = :id AND (last_used_at IS NULL OR last_used_at < :cutoff)"
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("cutoff", type_=UTCDateTime()),
    bindparam("id", type_=Uuid()),
)


class TouchLimiter:
    """``last_used_at`` is written at most once a minute per token and process, off the event
    loop, and a failure (a busy SQLite writer) is ignored: it is bookkeeping, not auth."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def due(self, token_ids: list[Any]) -> list[Any]:
        now = time.monotonic()
        due = [t for t in token_ids if now - self._last.get(t, -1e9) > 60]
        for t in due:
            self._last[t] = now
        if len(self._last) > 100_000:
            self._last.clear()
        return due


def touch_tokens(
    connect: Callable[[], AbstractContextManager[Connection]], ids: list[Any], now: datetime
) -> None:
    from sqlalchemy.exc import OperationalError

    try:
        with connect() as conn:
            for token_id in ids:
                conn.execute(
                    _TOUCH, {"now": now, "cutoff": now - _LAST_USED_RESOLUTION, "id": token_id}
                )
    except OperationalError:
        log.info("could not record token use; will try again later", exc_info=True)


_BY_USERNAME = (
    text(
        "SELECT id, username, password_hash, is_active, is_admin FROM accounts WHERE username = :u"
    )
    .bindparams(bindparam("u", type_=String()))
    .columns(id=Uuid())
)
_BY_EMAIL = (
    text("SELECT id, username, password_hash, is_active, is_admin FROM accounts WHERE email = :u")
    .bindparams(bindparam("u", type_=String()))
    .columns(id=Uuid())
)


def _usable(ctx: CredentialContext, row: Any) -> bool:
    return (
        row.revoked_at is None
        and (row.expires_at is None or row.expires_at > ctx.now)
        and (row.account_id is None or bool(row.is_active))
    )


def token_principal(
    ctx: CredentialContext,
    secret: str,
    *,
    kinds: tuple[str, ...] = ("personal", "robot", "refresh"),
) -> Principal:
    """The principal behind an access token; BadCredentials if unknown or unusable."""
    if security.token_kind(secret) not in kinds:
        raise BadCredentials("unknown or malformed token")
    with ctx.connect() as conn:
        row = conn.execute(_TOKEN, {"hash": security.hash_token(secret)}).first()
    if row is None or row.kind not in kinds:
        raise BadCredentials("unknown token")
    if row.revoked_at is not None:
        raise BadCredentials("this token was revoked")
    if row.expires_at is not None and row.expires_at <= ctx.now:
        raise BadCredentials("this token expired")
    if row.account_id is not None and not row.is_active:
        raise AccountDisabled("this account is disabled")
    if row.last_used_at is None or ctx.now - row.last_used_at > _LAST_USED_RESOLUTION:
        ctx.touch.append(row.id)
    scopes = frozenset(row.scopes) & REGISTRY_TOKEN_SCOPES
    if row.kind == "robot":
        return Principal(
            kind="robot",
            subject=f"robot:{row.org_slug}:{secret[:12]}",
            organization_id=row.organization_id,
            token_scopes=scopes,
            token_id=row.id,
        )
    return Principal(
        kind="account",
        subject=str(row.username),
        account_id=row.account_id,
        is_admin=bool(row.is_admin),
        token_scopes=scopes,
        token_id=row.id,
        extra={"token_kind": row.kind},
    )


# --- resolvers ----------------------------------------------------------------------------


def sync_password(settings: Settings) -> str:
    """The password of the store's own sync credential, derived from the store's secret."""
    return hmac.new(
        settings.resolved_secret_key.encode(), b"registry-sync-credential", hashlib.sha256
    ).hexdigest()


async def resolve_sync(ctx: CredentialContext, username: str, password: str) -> Principal | None:
    if username != SYNC_USERNAME:
        return None
    if not security.constant_time_equals(password, sync_password(ctx.settings)):
        raise BadCredentials()
    return Principal(kind="sync", subject=SYNC_USERNAME)


def _license_module() -> Any:
    try:
        from store.licensing import credentials as license_credentials
    except ModuleNotFoundError:  # licensing not installed in this build
        return None
    return license_credentials


async def resolve_license(ctx: CredentialContext, username: str, password: str) -> Principal | None:
    """A license token as the password (username ``license`` or the license id): pull on the
    licensed product's repository only. Verified by
    ``store.licensing.credentials.resolve_license_credential``."""
    module = _license_module()
    if module is None or not module.is_license_username(username):
        return None

    def call() -> Principal:
        from store.errors import StoreError

        with ctx.sessionmaker() as session:
            try:
                entitlement = module.resolve_license_credential(
                    session, ctx.keyring, ctx.settings, username, password, now=ctx.now
                )
            except StoreError as exc:
                raise BadCredentials(exc.detail) from None
            return Principal(
                kind="license",
                subject=f"license:{entitlement.id}",
                repositories=frozenset({entitlement.product.repository}),
                token_scopes=frozenset({"pull"}),
            )

    return await run_in_threadpool(call)


async def resolve_access_token(
    ctx: CredentialContext, username: str, password: str
) -> Principal | None:
    if not password.startswith(tuple(security.TOKEN_PREFIXES.values())):
        return None
    principal = token_principal(ctx, password)
    # A personal token must be used with its owner's name (robots take any name), so a
    # pasted token of someone else is not silently accepted.
    login = username.strip().lower()
    if principal.kind == "account" and login not in ("", principal.subject, "oauth2accesstoken"):
        raise BadCredentials("this token belongs to another user")
    return principal


async def resolve_password(
    ctx: CredentialContext, username: str, password: str
) -> Principal | None:
    login = username.strip().lower()
    if not login or not password:
        raise BadCredentials()
    with ctx.connect() as conn:
        row = conn.execute(_BY_EMAIL if "@" in login else _BY_USERNAME, {"u": login}).first()
    if row is None:
        await run_in_threadpool(security.burn_password_check, password)
        raise BadCredentials()
    if not ctx.cache.hit(row.username, password, row.password_hash):
        ok = await run_in_threadpool(security.verify_password, row.password_hash, password)
        if not ok:
            raise BadCredentials()
        ctx.cache.remember(row.username, password, row.password_hash)
    if not row.is_active:
        raise AccountDisabled("this account is disabled")
    return Principal(
        kind="account", subject=row.username, account_id=row.id, is_admin=bool(row.is_admin)
    )


RESOLVERS: list[Resolver] = [resolve_sync, resolve_license, resolve_access_token, resolve_password]


async def resolve(ctx: CredentialContext, username: str, password: str) -> Principal:
    for resolver in RESOLVERS:
        principal = await resolver(ctx, username, password)
        if principal is not None:
            return principal
    raise BadCredentials()
