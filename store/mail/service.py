"""Notice preferences, and the outbox as operators see it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from store.accounts.models import Account
from store.db import utcnow
from store.errors import Conflict, NotFound
from store.mail.models import MailOptOut, OutboxMessage
from store.mail.strings import NOTICE_CATEGORIES


def preferences(session: Session, account: Account) -> dict[str, bool]:
    """Each notice category, and whether the account receives it."""
    off = set(
        session.scalars(select(MailOptOut.category).where(MailOptOut.account_id == account.id))
    )
    return {category: category not in off for category in NOTICE_CATEGORIES}


def set_preferences(session: Session, *, account: Account, wanted: set[str]) -> None:
    """Receive the notice categories in ``wanted`` and none of the others."""
    unknown = wanted - set(NOTICE_CATEGORIES)
    if unknown:
        raise NotFound(f"No notice category {sorted(unknown)[0]!r}", code="no_such_category")
    current = preferences(session, account)
    for category in NOTICE_CATEGORIES:
        if category in wanted and not current[category]:
            session.execute(
                delete(MailOptOut).where(
                    MailOptOut.account_id == account.id, MailOptOut.category == category
                )
            )
        elif category not in wanted and current[category]:
            session.add(MailOptOut(account_id=account.id, category=category))
    session.flush()


def unsubscribe(session: Session, *, account_id: uuid.UUID, category: str) -> Account | None:
    """Turn one category off (from a signed unsubscribe link); the account, or None when it
    no longer exists. Doing it twice changes nothing."""
    account = session.get(Account, account_id)
    if account is None:
        return None
    if preferences(session, account).get(category, False):
        session.add(MailOptOut(account_id=account.id, category=category))
        session.flush()
    return account


# --- the outbox, for operators ----------------------------------------------------------


@dataclass(frozen=True)
class OutboxPage:
    items: list[OutboxMessage]
    counts: dict[str, int]


def list_outbox(session: Session, *, failed_only: bool = False, limit: int = 100) -> OutboxPage:
    """The newest messages (or only the failed ones), and how many there are by status."""
    query = select(OutboxMessage).order_by(OutboxMessage.created_at.desc()).limit(limit)
    if failed_only:
        query = query.where(OutboxMessage.status == "failed")
    counts = {
        status: count
        for status, count in session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        )
    }
    return OutboxPage(items=list(session.scalars(query)), counts=counts)


def get_message(session: Session, message_id: uuid.UUID) -> OutboxMessage:
    message = session.get(OutboxMessage, message_id)
    if message is None:
        raise NotFound("No such message in the outbox", code="no_such_message")
    return message


def retry(session: Session, *, message_id: uuid.UUID) -> OutboxMessage:
    """Queue a failed message again, now, with a fresh count of attempts. A message that is
    pending, being sent or sent is refused (it is on its way, or it went out)."""
    message = get_message(session, message_id)
    if message.status != "failed":
        raise Conflict(
            f"Only failed messages are retried; this one is {message.status}",
            code="not_failed",
        )
    message.status = "pending"
    message.attempts = 0
    message.next_attempt_at = utcnow()
    message.claim_token = None
    message.claimed_until = None
    session.flush()
    return message
