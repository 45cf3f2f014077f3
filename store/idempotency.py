"""Events from outside acted on exactly once: registry notifications, payment webhooks,
build hooks.

The first to insert ``ProcessedEvent(source, event_id)`` in its transaction acts on the
event; the unique key makes a second delivery, in any process, fail that insert and do
nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from store.db import Base, new_id, utcnow


class ProcessedEvent(Base):
    """An event from outside acted on: its source and the id the source gave it."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    source: Mapped[str] = mapped_column(String(16))  # registry | stripe | build-hook
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(100), default="")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
