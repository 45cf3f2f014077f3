"""The outbox: every message the store sends, from the moment its cause commits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, new_id, utcnow

# pending: waiting for (another) delivery attempt; sending: claimed by one sender;
# sent: accepted by the mail server (or written to a file); failed: given up, or its sender
# stopped while delivering (``store mail retry`` sends it again).
STATUSES = ("pending", "sending", "sent", "failed")


class OutboxMessage(Base):
    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # The RFC 5322 Message-ID: one per message, kept across retries.
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    # What caused the message ("verify:<account>:<token>", "stripe:evt_...:failed_payment"):
    # a second enqueue with the same key adds nothing, so an event handled twice mails once.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    template: Mapped[str] = mapped_column(String(64))
    # transactional (always sent) or a notice category a user may turn off.
    category: Mapped[str] = mapped_column(String(32), default="transactional")
    account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True, default=None
    )
    to_addr: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text, default="")
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"filename", "content_type", "data" (base64)}]
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The claim of the sender delivering it: a random token, and when the claim lapses.
    claim_token: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)


class MailOptOut(Base):
    """A notice category an account does not want (transactional mail is always sent)."""

    __tablename__ = "mail_opt_outs"

    account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
