"""Logging in with a password (pages and ``POST /api/v1/auth/token``), in three steps:

1. **Reserve** an attempt for the account name and the address (``store.ratelimit.reserve``)
   and look the account up: one short transaction, committed at once, so every process
   sees the attempt before the password is checked (429 when none is left). This happens
   once the check's slot is held (``security.CheckSlots.hold_async``): when no slot frees
   up in time the caller gets 429 with ``Retry-After`` and nothing was written.
2. **Check** the password (argon2id) in that slot, outside any transaction: on SQLite no
   write lock is held for the 0.2 s a check takes. An unknown account costs the same one
   check against a constant hash.
3. **Record** the outcome in a second transaction: a failure stays counted and is
   audited; a success gives its attempt back, is audited (unless a second factor is still
   to come), and runs the caller's ``then`` (make an API token, a web session) in the same
   transaction.

Both transactions run in the process's write turns (``app.state.write_turns``): callers
must not hold a request transaction of their own (routes using this take no ``DbSession``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from store import ratelimit, security
from store.accounts import service as accounts
from store.accounts import two_factor
from store.accounts.models import Account
from store.audit import service as audit
from store.db import session_scope
from store.errors import Forbidden, StoreError, Unauthorized

T = TypeVar("T")


@dataclass(frozen=True)
class _Found:
    reservation: ratelimit.Reservation
    account_id: uuid.UUID | None
    password_hash: str | None


def _reserve(app: Any, checks: list[tuple[ratelimit.Rule, str | None]], login: str) -> _Found:
    with session_scope(app.state.sessionmaker) as session:
        reservation = ratelimit.reserve(session, checks)
        account = accounts.find_account(session, login) if login.strip() else None
        if account is None:
            return _Found(reservation, None, None)
        return _Found(reservation, account.id, account.password_hash)


_FAILED = "failed"
_DISABLED = "disabled"


def _record(
    app: Any,
    found: _Found,
    ok: bool,
    password: str,
    via: str,
    then: Callable[[Session, Account], T],
) -> tuple[str, T | None]:
    """The outcome, committed: (_FAILED | _DISABLED, None) or ("", what ``then`` made)."""
    with session_scope(app.state.sessionmaker) as session:
        account = session.get(Account, found.account_id) if ok and found.account_id else None
        if account is None:
            audit.sign_in_failed(session, account_id=found.account_id, via=via)
            return _FAILED, None  # the reserved attempt stays counted
        ratelimit.release(session, found.reservation)
        if not account.is_active:
            return _DISABLED, None
        if security.password_needs_rehash(account.password_hash):
            account.password_hash = security.hash_password(password)
        if not two_factor.enabled(account):  # else signed in once the code is right
            audit.sign_in(session, account=account, via=via)
        return "", then(session, account)


async def log_in(
    request: Any,
    *,
    login: str,
    password: str,
    via: str,
    then: Callable[[Session, Account], T],
) -> T:
    """Check a log-in (see the module docstring); ``then(session, account)`` runs in the
    transaction that records the success. Raises TooManyRequests (429, Retry-After),
    Unauthorized ``bad_credentials`` or Forbidden ``account_disabled``."""
    app = request.app
    turns = app.state.write_turns
    checks = ratelimit.login_checks(request, login)
    # The check's slot first: when none frees up in time the caller gets 429 before
    # anything is written (security.CheckSlots.hold_async).
    async with security.password_checks.hold_async() as slot:
        try:
            found = await turns.run(_reserve, app, checks, login)
        except ratelimit.Refused as exc:
            raise ratelimit.too_many(exc.wait, "failed log-ins") from None
        if found.password_hash is None:
            await security.burn_password_check_async(password, slot)
            ok = False
        else:
            ok = await security.verify_password_async(found.password_hash, password, slot)
    outcome, value = await turns.run(_record, app, found, ok, password, via, then)
    if outcome == _FAILED:
        raise Unauthorized("Incorrect username or password", code="bad_credentials")
    if outcome == _DISABLED:
        raise Forbidden("This account is disabled", code="account_disabled")
    return value


# --- the current password of a logged-in account ------------------------------------------

# The refusals that keep their reserved attempt: a wrong password, a wrong second factor.
WRONG = frozenset(("wrong_password", "bad_two_factor_code"))


def reserve_attempt(request: Any, session: Session, key: str) -> ratelimit.Reservation | int:
    """Before a secret of a logged-in account is checked: one attempt of ``key`` and of the
    address, limited as failed log-ins are (store.ratelimit.reserve) and committed at once,
    so every process counts it and however many arrive together no more than the limit are
    checked. The seconds to wait when none is left; :func:`give_back` the attempt unless it
    was wrong."""
    checks = ratelimit.login_checks(request, key)
    try:
        reservation = ratelimit.reserve(session, checks)
    except ratelimit.Refused as exc:
        session.commit()
        return exc.wait
    session.commit()
    return reservation


def reserve_password_attempt(
    request: Any, session: Session, account: Account
) -> ratelimit.Reservation | int:
    """Before the current password of a logged-in account is checked (changing it, deleting
    the account): whoever holds a session or an ``api`` token but not the password cannot
    guess it without bound."""
    return reserve_attempt(request, session, f"password:{account.id}")


def give_back(session: Session, reserved: ratelimit.Reservation | int, code: str) -> None:
    """Return a reserved attempt, unless the refusal ``code`` was a wrong password or code."""
    if isinstance(reserved, ratelimit.Reservation) and code not in WRONG:
        ratelimit.release(session, reserved)


@contextmanager
def password_attempt(request: Any, session: Session, account: Account) -> Iterator[None]:
    """For the JSON API: an attempt reserved around a service that checks the current
    password (TooManyRequests when none is left), given back unless it was wrong."""
    reserved = reserve_password_attempt(request, session, account)
    if isinstance(reserved, int):
        raise ratelimit.too_many(reserved, "wrong passwords")
    try:
        yield
    except StoreError as exc:
        session.rollback()  # the service's writes; the attempt was committed before
        give_back(session, reserved, exc.code)
        session.commit()
        raise
    give_back(session, reserved, "")
