"""Who is logged in.

The signed session cookie holds a random session id (``sid``); the session itself is a row
of ``web_sessions`` (store.accounts.sessions) that log-out, a password change or reset,
disabling the account, the sessions page, the absolute lifetime and the idle timeout end.
A cookie whose session has ended counts as logged out, wherever it was copied to.

Reading who is logged in is a read (GET requests stay read-only): the session's last
request is written at most every few minutes, after the response, in a write turn of its
own (``touch_later``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from fastapi import BackgroundTasks, Request
from sqlalchemy.orm import Session, sessionmaker

from store import ratelimit
from store.accounts import sessions
from store.accounts.models import Account
from store.config import Settings
from store.db import session_scope, utcnow
from store.errors import Unauthorized
from store.web import csrf

SESSION_KEY = "sid"
# Keys of cookies made before sessions were kept on the server: dropped when seen.
_LEGACY_KEYS = ("account_id", "password_changed_at")
_LOADED = "_store_viewer_loaded"


@dataclass(frozen=True)
class Me:
    """What the page header shows about the logged-in account (safe after the DB session ends)."""

    id: uuid.UUID
    username: str
    display_name: str
    is_admin: bool


def lifetimes(settings: Settings) -> sessions.Lifetimes:
    return sessions.Lifetimes.of(settings)


def _remember(request: Request, account: Account | None, session_id: uuid.UUID | None) -> None:
    request.state.account = account
    request.state.web_session_id = session_id
    request.state.me = (
        Me(account.id, account.username, account.display_name, account.is_admin)
        if account is not None
        else None
    )
    setattr(request.state, _LOADED, True)


def current_account(request: Request, session: Session) -> Account | None:
    """The active account of this browser's live session, or None (a read only)."""
    if "session" not in request.scope:
        return None
    if getattr(request.state, _LOADED, False):
        account: Account | None = request.state.account
        return account
    data = request.session
    for key in _LEGACY_KEYS:
        data.pop(key, None)
    secret = data.get(SESSION_KEY)
    if not isinstance(secret, str) or not secret:
        _remember(request, None, None)
        return None
    now = utcnow()
    record = sessions.resolve(
        session, secret, lifetimes=lifetimes(request.app.state.settings), now=now
    )
    if record is None:
        data.pop(SESSION_KEY, None)  # ended, expired or unknown: forget it
        _remember(request, None, None)
        return None
    if sessions.touch_due(record, now):
        request.state.web_session_touch = (record.id, now)
    _remember(request, record.account, record.id)
    return record.account


def touch_later(request: Request, background: BackgroundTasks) -> None:
    """After the response: record the session's request (when due), in a write turn."""
    due = getattr(request.state, "web_session_touch", None)
    if due is None:
        return
    request.state.web_session_touch = None
    session_id, now = due
    background.add_task(
        request.app.state.write_turns.run,
        _touch,
        request.app.state.sessionmaker,
        session_id,
        now,
    )


def _touch(factory: sessionmaker[Session], session_id: uuid.UUID, now: datetime) -> None:
    with session_scope(factory) as session:
        sessions.touch(session, session_id=session_id, now=now)


def require_account(request: Request, session: Session) -> Account:
    """The logged-in account; Unauthorized (a redirect to the login page for browsers)."""
    account = current_account(request, session)
    if account is None:
        raise Unauthorized("Log in to continue", code="login_required")
    return account


def open_session(request: Request, session: Session, account: Account) -> str:
    """A new server-side session for this browser (in ``session``'s transaction); its
    secret for :func:`use_session`."""
    settings: Settings = request.app.state.settings
    _record, secret = sessions.start_session(
        session,
        account=account,
        user_agent=request.headers.get("user-agent", ""),
        address=ratelimit.client_ip(request, ratelimit.limits_of(request.app)),
        lifetimes=lifetimes(settings),
    )
    return secret


def use_session(request: Request, account: Account, secret: str) -> None:
    """Put a session opened by :func:`open_session` into this browser's cookie (a fresh
    cookie: nothing of an earlier session carries over but the flash messages)."""
    flashes = request.session.get("_flashes", [])
    request.session.clear()
    request.session[SESSION_KEY] = secret
    if flashes:
        request.session["_flashes"] = flashes
    csrf.rotate(request)
    _remember(request, account, None)


def login_session(request: Request, session: Session, account: Account) -> None:
    """Log this browser in as ``account`` with a new session (also after its password
    changed, which ended the others)."""
    use_session(request, account, open_session(request, session, account))


def logout_session(request: Request, session: Session) -> None:
    """End this browser's session on the server and forget it."""
    secret = request.session.get(SESSION_KEY) if "session" in request.scope else None
    if isinstance(secret, str) and secret:
        record = sessions.find(session, secret)
        if record is not None:
            sessions.end_session(session, session_id=record.id, reason="logout")
    request.session.clear()
    _remember(request, None, None)
