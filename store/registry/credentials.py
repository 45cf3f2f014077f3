"""Credentials sent to the token endpoint, resolved to a :class:`Principal`.

Resolution is a chain of resolvers (``RESOLVERS``): each looks at the Basic username and
password and either returns a principal, returns None ("not mine, ask the next one"), or
raises :class:`BadCredentials`. Built in, in order:

1. the store's own sync credential (username ``_store-sync``; no account can have it);
2. a license token sent as the password with username ``license`` (or the license id),
   verified by ``store.licensing.credentials.resolve_license_credential``;
3. a running build's short-lived credential (username ``_store-build``,
   ``store.builds.queue.credential``): pull and push on the repository it builds only;
4. access tokens (personal, organization robot), recognised by prefix + checksum; refresh
   tokens are only taken by the OAuth2 refresh grant (``store.registry.refresh``), which
   checks their source;
5. username (or e-mail) and password; refused for an account with two-factor sign-in on
   (its personal access tokens are the way for docker and other CLIs).

Add a kind by inserting a resolver into ``RESOLVERS``. The access-token and password
resolvers cost one statement each (``store.registry.lookup``), which also reads the facts of
the first repository asked for, so a token request is one database round trip. Password
checks are argon2id (≈ 200 ms at production cost), so a successful check is remembered for
a short time in a bounded, per-process cache keyed by an HMAC of (username, password,
stored password hash): a password change changes the hash and thereby misses the cache at
once; a disabled account is refused because ``is_active`` is read on every request.
Failures are never cached, and concurrent checks of one credential share one argon2 run.
"""

from __future__ import annotations

import asyncio
import functools
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
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Uuid, bindparam, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from store import security
from store.config import Settings
from store.db import UTCDateTime
from store.licensing.usable import usable_until
from store.registry import lookup
from store.registry.grants import Principal, RepoFacts
from store.registry.lookup import TokenDB

T = TypeVar("T")
log = logging.getLogger("store.registry.credentials")
SYNC_USERNAME = "_store-sync"
REGISTRY_TOKEN_SCOPES = frozenset(("pull", "push"))


class BadCredentials(Exception):
    """Unknown user, wrong password, unusable token: the client hears 401 UNAUTHORIZED."""

    def __init__(self, message: str = "bad credentials") -> None:
        super().__init__(message)
        self.message = message


class AccountDisabled(BadCredentials):
    pass


class TwoFactorRequired(AccountDisabled):
    """The password was right, but the account signs in with a second factor, which docker
    cannot send: it logs in with a personal access token instead (not a failed attempt)."""


@dataclass
class CredentialContext:
    # The token endpoint's reads (store.registry.lookup): one statement per credential,
    # joined with the facts of ``repository``; the facts found are left in ``facts``.
    db: TokenDB
    # Opens a short unit of work on the database through SQLAlchemy (committed on exit), for
    # writes and rare reads. Never held across an await.
    connect: Callable[[], AbstractContextManager[Connection]]
    settings: Settings
    sessionmaker: sessionmaker[Session]
    cache: PasswordCache
    now: datetime
    keyring: Any = None  # the app's KeyRing (license verification reads keys through it)
    repository: str = ""  # the first repository asked for ("" for none)
    facts: dict[str, RepoFacts] = field(default_factory=dict)
    touch: list[Any] = field(default_factory=list)  # tokens whose last_used_at is stale
    # Takes an attempt before a password is checked (store.ratelimit): None, no limits.
    attempts: PasswordAttempts | None = None
    counted: bool = False  # this request's failure is already counted by its reservation


class PasswordAttempts(Protocol):
    async def reserve(self, username: str, password: str) -> Any: ...

    async def release(self, reservation: Any) -> None: ...


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
        self._pending: dict[bytes, asyncio.Task[bool]] = {}

    def _digest(self, username: str, password: str, password_hash: str) -> bytes:
        message = b"\0".join((username.encode(), password.encode(), password_hash.encode()))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, username: str, password: str, password_hash: str) -> bool:
        return self._hit(self._digest(username, password, password_hash))

    def _hit(self, key: bytes) -> bool:
        expires = self._entries.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            with self._lock:
                self._entries.pop(key, None)
            return False
        return True

    def pending(self, username: str, password: str, password_hash: str) -> bool:
        """Whether a check of this credential is running in this event loop (join it)."""
        task = self._pending.get(self._digest(username, password, password_hash))
        return task is not None and task.get_loop() is asyncio.get_running_loop()

    async def check(
        self,
        username: str,
        password: str,
        password_hash: str,
        slot: security.HeldSlot | None = None,
    ) -> bool:
        """Whether the password matches: from the cache, or by argon2 in a check slot
        (``slot`` when the caller holds one already; it is used or given back).

        Concurrent checks of the same credential share one argon2 run (a CI fleet pulling
        at once after a restart would otherwise run one each, 64 MiB apiece)."""
        key = self._digest(username, password, password_hash)
        if self._hit(key):
            return True
        loop = asyncio.get_running_loop()
        task = self._pending.get(key)
        if task is None or task.get_loop() is not loop:
            if slot is not None:  # started now, so the slot is in use before any await
                started = security.submit_password_check(slot, password_hash, password)
                task = loop.create_task(self._settle(key, asyncio.wrap_future(started)))
            else:
                checked = security.verify_password_async(password_hash, password)
                task = loop.create_task(self._settle(key, checked))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        elif slot is not None:
            slot.give_back()  # joining a running check needs no slot of its own
        # shield: a client that goes away does not cancel the check the others wait for
        return await asyncio.shield(task)

    async def _settle(self, key: bytes, checked: Awaitable[bool]) -> bool:
        ok = await checked
        if ok:
            self._remember(key)
        return bool(ok)

    def _forget(self, key: bytes, task: asyncio.Task[bool]) -> None:
        if self._pending.get(key) is task:
            del self._pending[key]

    def remember(self, username: str, password: str, password_hash: str) -> None:
        self._remember(self._digest(username, password, password_hash))

    def _remember(self, key: bytes) -> None:
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


# --- writes ---------------------------------------------------------------------------------

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
            cutoff = now - lookup.LAST_USED_RESOLUTION
            for token_id in ids:
                conn.execute(_TOUCH, {"now": now, "cutoff": cutoff, "id": token_id})
    except OperationalError:
        log.info("could not record token use; will try again later", exc_info=True)


async def token_principal(
    ctx: CredentialContext,
    secret: str,
    *,
    kinds: tuple[str, ...] = ("personal", "robot"),
) -> Principal:
    """The principal behind an access token; BadCredentials if unknown or unusable.

    One statement reads the token, its owner and the facts of ``ctx.repository``."""
    if security.token_kind(secret) not in kinds:
        raise BadCredentials("unknown or malformed token")
    row = await lookup.credential(
        ctx.db, "token", {"hash": security.hash_token(secret)}, ctx.repository, ctx.now
    )
    if row["cid"] is None or row["ckind"] not in kinds:
        raise BadCredentials("unknown token")
    if row["crevoked"]:
        raise BadCredentials("this token was revoked")
    if row["cexpired"]:
        raise BadCredentials("this token expired")
    if row["caid"] is not None and not row["cactive"]:
        raise AccountDisabled("this account is disabled")
    codec = ctx.db.codec
    token_id = codec.uuid(row["cid"])
    if row["cstale"]:
        ctx.touch.append(token_id)
    scopes = frozenset(codec.strings(row["cscopes"])) & REGISTRY_TOKEN_SCOPES
    expires_at = codec.moment(row["cexpires"]) if row["cexpires"] is not None else None
    principal: Principal
    if row["ckind"] == "robot":
        principal = Principal(
            kind="robot",
            subject=f"robot:{row['corg']}:{secret[:12]}",
            organization_id=codec.uuid(row["coid"]),
            token_scopes=scopes,
            token_id=token_id,
            expires_at=expires_at,
        )
    else:
        principal = Principal(
            kind="account",
            subject=str(row["cname"]),
            account_id=codec.uuid(row["caid"]),
            is_admin=bool(row["cadmin"]),
            token_scopes=scopes,
            token_id=token_id,
            expires_at=expires_at,
            extra={"token_kind": row["ckind"]},
        )
    if ctx.repository:
        ctx.facts[ctx.repository] = lookup.repo_facts(ctx.repository, row, codec)
    return principal


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


def unguessable_username(username: str) -> bool:
    """The sync credential and license names: their passwords are tokens, never guessed, so
    failures are not counted against the name (store.ratelimit)."""
    if username == SYNC_USERNAME:
        return True
    module = _license_module()
    return module is not None and bool(module.is_license_username(username))


def preload() -> None:
    """Import now (at start-up) the modules the resolvers import on first use: importing
    one on the event loop under the first burst of requests stalls every other request of
    the worker (100-300 ms for these two on a loaded 2-core machine)."""
    _license_module()
    from store.builds import queue  # noqa: F401


@functools.cache  # asked on every token request: imported once
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
                license_id, entitlement = module.resolve_license(
                    session, ctx.keyring, ctx.settings, username, password, now=ctx.now
                )
            except StoreError as exc:
                raise BadCredentials(exc.detail) from None
            return Principal(
                kind="license",
                subject=f"license:{entitlement.id}",
                repositories=frozenset({entitlement.product.repository}),
                token_scopes=frozenset({"pull"}),
                expires_at=usable_until(entitlement.ends_at, entitlement.grace_until),
                extra={"license_id": license_id},
            )

    return await run_in_threadpool(call)


async def resolve_access_token(
    ctx: CredentialContext, username: str, password: str
) -> Principal | None:
    if not password.startswith(tuple(security.TOKEN_PREFIXES.values())):
        return None
    principal = await token_principal(ctx, password)
    # A personal token must be used with its owner's name (robots take any name), so a
    # pasted token of someone else is not silently accepted.
    login = username.strip().lower()
    if principal.kind == "account" and login not in ("", principal.subject, "oauth2accesstoken"):
        raise BadCredentials("this token belongs to another user")
    return principal


async def resolve_password(
    ctx: CredentialContext, username: str, password: str
) -> Principal | None:
    """Username (or e-mail) and password. argon2 runs only when the keyed cache misses."""
    login = username.strip().lower()
    if not login or not password:
        raise BadCredentials()
    row = await lookup.credential(
        ctx.db, "email" if "@" in login else "username", {"login": login}, ctx.repository, ctx.now
    )
    if row["cid"] is None:
        # As much work as a wrong password, counted like one: a check slot first (a 429
        # when none frees up in time, before anything is written), then the attempt.
        async with security.password_checks.hold_async() as slot:
            await _reserve(ctx, username, password)
            await security.burn_password_check_async(password, slot)
        raise BadCredentials()
    name, password_hash = row["cname"], row["chash"]
    if not ctx.cache.hit(name, password, password_hash) and not await _check_password(
        ctx, username, password, name, password_hash
    ):
        raise BadCredentials()
    if not row["cactive"]:
        raise AccountDisabled("this account is disabled")
    if row["c2fa"]:
        raise TwoFactorRequired(
            "this account uses two-factor sign-in: log in with a personal access token "
            "(create one under Account, Access tokens) instead of the password"
        )
    if ctx.repository:
        ctx.facts[ctx.repository] = lookup.repo_facts(ctx.repository, row, ctx.db.codec)
    return Principal(
        kind="account",
        subject=name,
        account_id=ctx.db.codec.uuid(row["cid"]),
        is_admin=bool(row["cadmin"]),
    )


async def _check_password(
    ctx: CredentialContext, username: str, password: str, name: str, password_hash: str
) -> bool:
    """A password the cache does not know, checked after its attempt is reserved; a success
    gives the attempt back. A new check takes its slot before the attempt (a 429 when none
    frees up in time, before anything is written); a request for a credential whose check
    is already running joins it."""
    cache = ctx.cache
    if cache.pending(name, password, password_hash):
        reservation = await _reserve(ctx, username, password)
        ok = await _checked(ctx, reservation, cache.check(name, password, password_hash))
    else:
        async with security.password_checks.hold_async() as slot:
            if cache.hit(name, password, password_hash):  # checked while this one waited
                return True
            reservation = await _reserve(ctx, username, password)
            ok = await cache.check(name, password, password_hash, slot)
    if ok:
        if ctx.attempts is not None:
            await ctx.attempts.release(reservation)  # a success is not a failed attempt
        ctx.counted = False
    return ok


async def _reserve(ctx: CredentialContext, username: str, password: str) -> Any:
    """Take an attempt before a password check (ratelimit.Refused when none is left)."""
    if ctx.attempts is None:
        return None
    reservation = await ctx.attempts.reserve(username, password)
    ctx.counted = True
    return reservation


async def _checked(ctx: CredentialContext, reservation: Any, check: Awaitable[T]) -> T:
    """Run a reserved check; when no check slot frees up in time, the attempt is given
    back (the password was never tried) and ChecksBusy goes on to the caller."""
    try:
        return await check
    except security.ChecksBusy:
        if ctx.attempts is not None:
            await ctx.attempts.release(reservation)
        ctx.counted = False
        raise


async def resolve_build(ctx: CredentialContext, username: str, password: str) -> Principal | None:
    """A build's credential: valid while its MAC checks, before its deadline, while the
    build is running, and while the account that saved the repository's build settings may
    still push there (a member removed in the middle of a build does not push at its end);
    it names the one repository the build pushes to."""
    from store.builds import queue

    if username != queue.BUILD_USERNAME:
        return None
    checked = queue.check_credential(ctx.settings, password, now=time.time())
    if checked is None:
        raise BadCredentials("this build credential is not valid (or expired)")
    build_id, deadline = checked

    def call() -> tuple[str, str, bool, str] | None:
        from sqlalchemy import select

        from store.builds.models import Build, BuildSource
        from store.registry.repositories import account_may_push

        with ctx.sessionmaker() as session:
            build = session.get(Build, build_id)
            if build is None:
                return None
            configured_by = session.scalar(
                select(BuildSource.configured_by_id).where(
                    BuildSource.repository_id == build.repository_id
                )
            )
            allowed, who = account_may_push(session, configured_by, build.repository)
            return build.status, build.repository, allowed, who

    found = await run_in_threadpool(call)
    if found is None or found[0] != "running":
        raise BadCredentials("this build is not running")
    if not found[2]:
        raise BadCredentials(
            f"{found[3]}, who configured these builds, may no longer push to {found[1]}"
        )
    return Principal(
        kind="build",
        subject=f"build:{build_id}",
        repositories=frozenset({found[1]}),
        expires_at=datetime.fromtimestamp(deadline, UTC),
        extra={"build_id": build_id},
    )


RESOLVERS: list[Resolver] = [
    resolve_sync,
    resolve_license,
    resolve_build,
    resolve_access_token,
    resolve_password,
]


async def resolve(ctx: CredentialContext, username: str, password: str) -> Principal:
    for resolver in RESOLVERS:
        principal = await resolver(ctx, username, password)
        if principal is not None:
            return principal
    raise BadCredentials()
