"""Who is logged in.

The signed session cookie holds the account id and the time the account's password last
changed; a session made before a password change no longer matches and counts as logged out.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC

from fastapi import Request
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.errors import Unauthorized
from store.web import csrf

ACCOUNT_KEY = "account_id"
PASSWORD_KEY = "password_changed_at"  # noqa: S105 (a session key, not a secret)


@dataclass(frozen=True)
class Me:
    """What the page header shows about the logged-in account (safe after the DB session ends)."""

    id: uuid.UUID
    username: str
    display_name: str
    is_admin: bool


def _stamp(account: Account) -> str:
    return account.password_changed_at.astimezone(UTC).isoformat(timespec="microseconds")


def _remember(request: Request, account: Account | None) -> None:
    request.state.account = account
    request.state.me = (
        Me(account.id, account.username, account.display_name, account.is_admin)
        if account is not None
        else None
    )


def current_account(request: Request, session: Session) -> Account | None:
    """The logged-in, active account whose password has not changed since it logged in."""
    if "session" not in request.scope:
        return None
    data = request.session
    raw_id, stamp = data.get(ACCOUNT_KEY), data.get(PASSWORD_KEY)
    if raw_id is None and stamp is None:
        _remember(request, None)
        return None
    account: Account | None = None
    if isinstance(raw_id, str) and isinstance(stamp, str):
        try:
            candidate = session.get(Account, uuid.UUID(raw_id))
        except ValueError:
            candidate = None
        if (
            candidate is not None
            and candidate.is_active
            and hmac.compare_digest(_stamp(candidate).encode(), stamp.encode())
        ):
            account = candidate
    if account is None:
        # Stale (password changed, account disabled or deleted): forget who it was.
        data.pop(ACCOUNT_KEY, None)
        data.pop(PASSWORD_KEY, None)
    _remember(request, account)
    return account


def require_account(request: Request, session: Session) -> Account:
    """The logged-in account; Unauthorized (a redirect to the login page for browsers)."""
    account = current_account(request, session)
    if account is None:
        raise Unauthorized("Log in to continue", code="login_required")
    return account


def login_session(request: Request, account: Account) -> None:
    """Start a fresh session for this account (also after its password changed)."""
    flashes = request.session.get("_flashes", [])
    request.session.clear()
    request.session[ACCOUNT_KEY] = str(account.id)
    request.session[PASSWORD_KEY] = _stamp(account)
    if flashes:
        request.session["_flashes"] = flashes
    csrf.rotate(request)
    _remember(request, account)


def logout_session(request: Request) -> None:
    request.session.clear()
    _remember(request, None)
