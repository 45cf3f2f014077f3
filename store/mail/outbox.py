"""Writing messages to the outbox, in the caller's transaction.

A message is rendered when its cause happens (so later edits do not change what it says)
and added to the same unit of work: a rolled-back purchase leaves no message, a committed
one always has its message. ``dedupe_key`` names the cause; a second message with the same
key is not added (an event handled twice, or by two processes, mails once).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store import TEMPLATES_DIR
from store.accounts.models import Account
from store.config import Settings
from store.db import new_id, utcnow
from store.errors import ValidationFailed
from store.mail.models import MailOptOut, OutboxMessage
from store.mail.strings import DEFAULT_LOCALE, NOTICE_CATEGORIES, t

TRANSACTIONAL = "transactional"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def site_name(settings: Settings) -> str:
    return urlsplit(settings.public_url).netloc or "Store"


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.resolved_secret_key, salt="mail-unsubscribe")


def unsubscribe_token(settings: Settings, account_id: uuid.UUID, category: str) -> str:
    return _serializer(settings).dumps([str(account_id), category])


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[uuid.UUID, str]:
    """The account and category an unsubscribe link names; a forged one is refused."""
    try:
        account_id, category = _serializer(settings).loads(token)
        parsed = uuid.UUID(str(account_id))
    except (BadSignature, ValueError, TypeError):
        raise ValidationFailed(
            "This unsubscribe link is not valid", code="bad_unsubscribe_link"
        ) from None
    if category not in NOTICE_CATEGORIES:
        raise ValidationFailed("This unsubscribe link is not valid", code="bad_unsubscribe_link")
    return parsed, str(category)


def wants(session: Session, account_id: uuid.UUID, category: str) -> bool:
    """Whether the account receives notices of ``category`` (transactional: always)."""
    if category == TRANSACTIONAL:
        return True
    return (
        session.scalar(
            select(MailOptOut.category).where(
                MailOptOut.account_id == account_id, MailOptOut.category == category
            )
        )
        is None
    )


def render(
    settings: Settings,
    template: str,
    context: dict[str, Any],
    *,
    locale: str = DEFAULT_LOCALE,
    unsubscribe_url: str | None = None,
) -> tuple[str, str, str]:
    """(subject, text body, HTML body) of ``templates/email/<template>.{txt,html}``."""
    site = site_name(settings)
    values: dict[str, Any] = {
        "site": site,
        "public_url": settings.public_url,
        "preferences_url": f"{settings.public_url}/my/notifications",
        "unsubscribe_url": unsubscribe_url,
        "locale": locale,
        **context,
    }
    # One line: names people typed (a display name, an organization's) may hold line
    # breaks, which would make the header unusable (the message never sent) or a new one.
    subject = " ".join(t(f"{template}.subject", locale, **values).split())
    values["subject"] = subject

    def translate(key: str, **kw: Any) -> str:
        return t(key, locale, **kw)

    def say(key: str) -> str:
        """The string ``key`` filled in from the message's own values."""
        return t(key, locale, **values)

    env = _environment()
    values.setdefault("template", template)
    text = env.get_template(f"email/{template}.txt").render(t=translate, say=say, **values)
    html = env.get_template(f"email/{template}.html").render(t=translate, say=say, **values)
    return subject, text.strip() + "\n", html


def enqueue(
    session: Session,
    *,
    settings: Settings,
    template: str,
    to: str | None = None,
    account: Account | None = None,
    context: dict[str, Any] | None = None,
    category: str = TRANSACTIONAL,
    dedupe_key: str | None = None,
    attachments: Iterable[Attachment] = (),
) -> uuid.UUID | None:
    """Add a message to the outbox in ``session``'s transaction; its id, or None when it was
    not added (the account turned this category off, or ``dedupe_key`` was already used).

    The recipient is ``to``, else the account's address. Non-transactional notices carry a
    ``List-Unsubscribe`` header (one click, RFC 8058).
    """
    if category != TRANSACTIONAL and category not in NOTICE_CATEGORIES:
        raise ValueError(f"unknown mail category {category!r}")
    address = to or (account.email if account is not None else None)
    if not address:
        raise ValueError("a message needs a recipient")
    if account is not None and not wants(session, account.id, category):
        return None
    headers: dict[str, str] = {}
    unsubscribe_url = None
    if category != TRANSACTIONAL and account is not None:
        token = unsubscribe_token(settings, account.id, category)
        unsubscribe_url = f"{settings.public_url}/mail/unsubscribe/{token}"
        headers["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    values = dict(context or {})
    if account is not None:
        values.setdefault("name", account.display_name or account.username)
        values.setdefault("username", account.username)
    values.setdefault("name", address)
    subject, text, html = render(settings, template, values, unsubscribe_url=unsubscribe_url)
    message_uuid = new_id()
    host = urlsplit(settings.public_url).hostname or "localhost"
    row = {
        "id": message_uuid,
        "message_id": f"<{message_uuid.hex}@{host}>",
        "dedupe_key": dedupe_key,
        "template": template,
        "category": category,
        "account_id": account.id if account is not None else None,
        "to_addr": address,
        "subject": subject,
        "text_body": text,
        "html_body": html,
        "headers": headers,
        "attachments": [
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "data": base64.b64encode(a.data).decode(),
            }
            for a in attachments
        ],
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": utcnow(),
        "last_error": "",
        "created_at": utcnow(),
    }
    if dedupe_key is None:
        session.execute(insert(OutboxMessage), [row])
        return message_uuid
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        stmt = postgresql.insert(OutboxMessage).on_conflict_do_nothing(
            index_elements=["dedupe_key"]
        )
    else:
        stmt = sqlite.insert(OutboxMessage).on_conflict_do_nothing(index_elements=["dedupe_key"])
    result = session.execute(stmt.values(**row).returning(OutboxMessage.id))
    return result.scalar_one_or_none()
