"""Delivering the outbox: claim one due message, send it, record the outcome.

Each message is sent at most once by its id:

* A claim is a transaction of its own that moves one due message from ``pending`` to
  ``sending`` under a random claim token. On PostgreSQL the row is taken ``FOR UPDATE SKIP
  LOCKED``, so two senders never claim the same message and neither waits for the other;
  on SQLite the claim runs in a writing transaction, which holds the database's one write
  lock (``BEGIN IMMEDIATE``), so claims are exclusive there too.
* The message is sent outside any transaction, then the outcome is recorded against the
  claim token: ``sent``; or back to ``pending`` with exponential backoff after a
  failure the server may get over (unreachable, 4xx); or ``failed`` after a permanent
  refusal (5xx), the last attempt, or at once when the message cannot be built (a header
  or attachment no MIME message carries: retrying cannot change it), with the reason.
* A sender that stops between claiming and recording leaves a ``sending`` message whose
  claim lapses. Whether it went out is unknown, so it is marked ``failed`` rather than sent
  again; ``store mail retry`` sends it once more when the operator decides to.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import read_only_session, session_scope, utcnow
from store.mail.backends import Backend, DeliveryError, Outgoing, backend_for
from store.mail.models import OutboxMessage

log = logging.getLogger("store.mail")

_COUNTED = {"sent": "sent", "pending": "retry", "failed": "failed"}
LAPSED_ERROR = "the sender stopped while delivering; whether it was delivered is unknown"


@dataclass(frozen=True)
class Policy:
    retry_base: float
    retry_max: float
    max_attempts: int
    # How long a claim lasts: longer than any one delivery can take.
    lease: float

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            retry_base=settings.mail_retry_base,
            retry_max=settings.mail_retry_max,
            max_attempts=settings.mail_max_attempts,
            lease=max(300.0, settings.mail_smtp_timeout * 6),
        )

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: base, 2 base, 4 base... at most max."""
        return float(min(self.retry_max, self.retry_base * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Claim:
    token: str
    outgoing: Outgoing
    attempts: int


def _due(now: datetime) -> ColumnElement[bool]:
    return (OutboxMessage.status == "pending") & (OutboxMessage.next_attempt_at <= now)


def due_exists(factory: sessionmaker[Session]) -> bool:
    """Whether a message is due or a claim has lapsed (a read that never waits for writers)."""
    now = utcnow()
    with read_only_session(factory) as session, session.begin():
        lapsed = (OutboxMessage.status == "sending") & (OutboxMessage.claimed_until < now)
        return bool(session.scalar(select(exists().where(_due(now) | lapsed))))


def claim(
    factory: sessionmaker[Session], policy: Policy, *, message: uuid.UUID | None = None
) -> Claim | None:
    """Claim the oldest due message (or the one ``message`` if it is due) for this sender,
    in a writing transaction of its own."""
    now = utcnow()
    with session_scope(factory) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.status == "sending", OutboxMessage.claimed_until < now)
            .values(status="failed", last_error=LAPSED_ERROR)
        )
        query = select(OutboxMessage).where(_due(now))
        if message is not None:
            query = query.where(OutboxMessage.id == message)
        row = session.scalars(
            query.order_by(OutboxMessage.next_attempt_at, OutboxMessage.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        token = secrets.token_hex(16)
        row.status = "sending"
        row.claim_token = token
        row.claimed_until = now + timedelta(seconds=policy.lease)
        row.attempts += 1
        return Claim(token=token, outgoing=Outgoing.of(row), attempts=row.attempts)


def record(
    factory: sessionmaker[Session],
    policy: Policy,
    claimed: Claim,
    error: DeliveryError | None,
) -> str:
    """Write the outcome of a delivery attempt; the message's new status."""
    now = utcnow()
    if error is None:
        values: dict[str, object] = {"status": "sent", "sent_at": now, "last_error": ""}
    elif error.permanent or claimed.attempts >= policy.max_attempts:
        values = {"status": "failed", "last_error": str(error)[:2000]}
    else:
        values = {
            "status": "pending",
            "next_attempt_at": now + timedelta(seconds=policy.backoff(claimed.attempts)),
            "last_error": str(error)[:2000],
        }
    values["claimed_until"] = None
    with session_scope(factory) as session:
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == uuid.UUID(claimed.outgoing.id),
                OutboxMessage.claim_token == claimed.token,
            )
            .values(**values)
        )
    return str(values["status"])


def deliver(backend: Backend, claimed: Claim) -> DeliveryError | None:
    """Send one claimed message; the error, if it failed."""
    try:
        backend.send(claimed.outgoing)
    except DeliveryError as exc:
        log.warning(
            "mail to %s not delivered (attempt %d): %s",
            claimed.outgoing.to_addr,
            claimed.attempts,
            exc,
        )
        return exc
    except Exception as exc:
        # The backends turn every transport error into a DeliveryError: anything else is
        # the message itself (a header or attachment no MIME message can carry, a bug in
        # building it), which no later attempt can change. Failed for good, with the reason,
        # and the sender goes on with the next message.
        log.exception("mail %s cannot be built", claimed.outgoing.id)
        return DeliveryError(
            f"the message cannot be built: {type(exc).__name__}: {exc}", permanent=True
        )
    return None


class Sender:
    """Delivers due messages until none is left; ``run_forever`` polls for more."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        backend: Backend | None = None,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.backend = backend or backend_for(settings)
        self.policy = Policy.of(settings)

    def run_once(self, *, limit: int | None = None) -> dict[str, int]:
        """Deliver what is due now; counts of sent, retried and failed messages. Stops at a
        failure the server may get over (it is likely down: the rest waits its backoff)."""
        counts = {"sent": 0, "retry": 0, "failed": 0}
        while limit is None or sum(counts.values()) < limit:
            claimed = claim(self.factory, self.policy)
            if claimed is None:
                break
            error = deliver(self.backend, claimed)
            status = record(self.factory, self.policy, claimed, error)
            counts[_COUNTED[status]] += 1
            if status == "pending":
                break
        return counts

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if due_exists(self.factory):
                    self.run_once()
            except Exception:
                log.exception("mail sender round failed")
            stop.wait(self.settings.mail_poll_interval)
