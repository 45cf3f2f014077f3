"""The audit log: append-only, hash-chained events of every security-relevant action."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, new_id, utcnow

GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    """One audited action. ``hash`` covers every other field and ``prev_hash``, so editing,
    deleting or reordering rows breaks the chain (``store audit verify`` finds where).

    Accounts and organizations are kept by id and name without foreign keys: the history
    outlives what it talks about.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_org_seq", "org_id", "seq"),
        Index("ix_audit_events_action_seq", "action", "seq"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))  # a username, or "system"
    actor_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(255), default="")
    org_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChainHead(Base):
    """The single row every append locks and advances: it serialises appends across
    processes and remembers the last event, so a deleted tail is detected too."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64), default=GENESIS_HASH)
