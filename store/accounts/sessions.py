"""Web sessions kept on the server: the signed cookie carries a random session id, the
database a SHA-256 of it with who, from where, since when and last seen when.

A session ends when its account logs out, changes its password, is disabled, has its
password reset or turns two-factor sign-in on (:func:`end_all_sessions`), when it is ended
from the sessions page, after ``STORE_SESSION_MAX_AGE`` (absolute, 14 days by default) and
after ``STORE_SESSION_IDLE_TIMEOUT`` without a request (2 days by default). ``last_seen_at`` is
written at most every ``TOUCH_EVERY`` (not on every page view), after the response, in a
write turn of its own: GET requests stay read-only.

Services take the session first and never commit.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from store.accounts.models import Account, WebSession
from store.audit import service as audit
from store.config import Settings
from store.db import utcnow
from store.errors import NotFound

TOUCH_EVERY = timedelta(minutes=5)
KEEP_ENDED = timedelta(days=1)  # ended sessions are deleted at the account's next log-in
USER_AGENT_MAX = 300


@dataclass(frozen=True)
class Lifetimes:
    absolute: timedelta = timedelta(days=14)
    idle: timedelta = timedelta(days=2)

    @classmethod
    def of(cls, settings: Settings) -> Lifetimes:
        """``STORE_SESSION_MAX_AGE`` and ``STORE_SESSION_IDLE_TIMEOUT``."""
        return cls(
            absolute=timedelta(seconds=settings.session_max_age),
            idle=timedelta(seconds=settings.session_idle_timeout),
        )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def start_session(
    session: Session,
    *,
    account: Account,
    user_agent: str,
    address: str,
    lifetimes: Lifetimes,
    now: datetime | None = None,
) -> tuple[WebSession, str]:
    """A new session for the account; the secret goes into the signed cookie only."""
    now = now or utcnow()
    secret = secrets.token_urlsafe(32)
    record = WebSession(
        account_id=account.id,
        secret_hash=_hash(secret),
        user_agent=(user_agent or "")[:USER_AGENT_MAX],
        address=(address or "")[:64],
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetimes.absolute,
    )
    session.add(record)
    _prune(session, account, lifetimes, now)
    session.flush()
    return record, secret


def _prune(session: Session, account: Account, lifetimes: Lifetimes, now: datetime) -> None:
    """Forget this account's sessions that ended a while ago (the table stays as small as
    the number of live sessions, give or take a day of ended ones)."""
    cutoff = now - KEEP_ENDED
    session.execute(
        delete(WebSession).where(
            WebSession.account_id == account.id,
            or_(
                WebSession.ended_at < cutoff,
                WebSession.expires_at < cutoff,
                WebSession.last_seen_at < cutoff - lifetimes.idle,
            ),
        )
    )


def usable(record: WebSession, lifetimes: Lifetimes, now: datetime) -> bool:
    return (
        record.ended_at is None
        and record.expires_at > now
        and record.last_seen_at + lifetimes.idle > now
    )


def find(session: Session, secret: str) -> WebSession | None:
    """The session with this secret, live or not."""
    if not secret or len(secret) > 100:
        return None
    return session.scalar(select(WebSession).where(WebSession.secret_hash == _hash(secret)))


def resolve(
    session: Session, secret: str, *, lifetimes: Lifetimes, now: datetime | None = None
) -> WebSession | None:
    """The live session with this secret whose account is active, else None (a read)."""
    now = now or utcnow()
    record = find(session, secret)
    if record is None or not usable(record, lifetimes, now):
        return None
    if not record.account.is_active:
        return None
    return record


def touch_due(record: WebSession, now: datetime) -> bool:
    return now - record.last_seen_at >= TOUCH_EVERY


def touch(session: Session, *, session_id: uuid.UUID, now: datetime) -> None:
    """Record a request at ``now`` (only forwards; an ended session stays ended)."""
    session.execute(
        update(WebSession)
        .where(
            WebSession.id == session_id,
            WebSession.ended_at.is_(None),
            WebSession.last_seen_at < now,
        )
        .values(last_seen_at=now)
    )


def end_session(session: Session, *, session_id: uuid.UUID, reason: str) -> None:
    session.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason[:32])
    )


def end_all_sessions(
    session: Session, account: Account, *, reason: str, keep: uuid.UUID | None = None
) -> int:
    """End every live session of the account (but ``keep``); how many were ended. Call
    it on password change or reset, disabling, and "log out everywhere"."""
    stmt = (
        update(WebSession)
        .where(WebSession.account_id == account.id, WebSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end_reason=reason[:32])
    )
    if keep is not None:
        stmt = stmt.where(WebSession.id != keep)
    result = session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)


def end_other_session(session: Session, account: Account, *, session_id: uuid.UUID) -> None:
    """End one session of this account (from the sessions page); NotFound for another's."""
    record = session.get(WebSession, session_id)
    if record is None or record.account_id != account.id:
        raise NotFound("No such session")
    end_session(session, session_id=session_id, reason="ended")


def get_session_record(session: Session, session_id: uuid.UUID) -> WebSession:
    record = session.get(WebSession, session_id)
    if record is None:
        raise NotFound("No such session")
    return record


def end_by(session: Session, *, record: WebSession, actor: Account) -> WebSession:
    """End a session as ``actor``: its own account (the API), or an administrator (the
    `store sessions end` command; audited as ``session.end``). Ending an ended session
    changes nothing; another account's session is NotFound for anyone else."""
    if record.account_id != actor.id and not actor.is_admin:
        raise NotFound("No such session")
    if record.ended_at is None:
        by_owner = record.account_id == actor.id
        end_session(session, session_id=record.id, reason="ended" if by_owner else "admin")
        if not by_owner:
            audit.record(
                session,
                action="session.end",
                actor=actor,
                target=record.account,
                details={"session": str(record.id)},
            )
        session.flush()
        session.refresh(record)
    return record


def active_sessions(
    session: Session,
    account: Account,
    *,
    lifetimes: Lifetimes,
    now: datetime | None = None,
    include_ended: bool = False,
) -> list[WebSession]:
    """The account's live sessions, most recently seen first (with ``include_ended``, also
    those that ended, expired or went idle and are still kept, about a day)."""
    now = now or utcnow()
    stmt = select(WebSession).where(WebSession.account_id == account.id)
    if not include_ended:
        stmt = stmt.where(
            WebSession.ended_at.is_(None),
            WebSession.expires_at > now,
            WebSession.last_seen_at > now - lifetimes.idle,
        )
    return list(session.scalars(stmt.order_by(WebSession.last_seen_at.desc())))


def idle_until(record: WebSession, lifetimes: Lifetimes) -> datetime:
    """When the session ends if it is not used before: the idle timeout or the absolute
    lifetime, whichever comes first."""
    return min(record.expires_at, record.last_seen_at + lifetimes.idle)
