"""Appending to the audit log, reading it, and proving it was not edited.

Each event stores the hash of the one before it and a SHA-256 over a canonical JSON of its
own fields plus that previous hash. Appends are serialised by one row (``audit_chain_head``):
the first statement of an append is an UPDATE of that row, which takes PostgreSQL's row lock
(and SQLite's database write lock) until the transaction ends, so two processes never chain
onto the same predecessor. An event is part of its caller's transaction: when the action
rolls back, so does its record.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from store.accounts.models import Account, Organization
from store.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from store.db import new_id, utcnow
from store.pagination import Page, paginate

HEAD_ID = 1
SYSTEM = "system"


def _json_safe(value: Any) -> Any:
    """Details as they will read back from the JSON column (so the hash still matches)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _at(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(event: AuditEvent) -> str:
    """SHA-256 (hex) over the canonical JSON of every field but ``hash`` itself."""
    fields = {
        "id": str(event.id),
        "seq": int(event.seq),
        "at": _at(event.at),
        "actor": event.actor,
        "actor_id": str(event.actor_id) if event.actor_id else None,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "org_id": str(event.org_id) if event.org_id else None,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256(canonical(fields)).hexdigest()


def _ensure_head(session: Session) -> None:
    if session.get(AuditChainHead, HEAD_ID) is None:  # the migration creates it; tests may not
        session.add(AuditChainHead(id=HEAD_ID, seq=0, hash=GENESIS_HASH))
        session.flush()


def record(
    session: Session,
    *,
    action: str,
    actor: Account | str | None = None,
    target: object = None,
    target_type: str = "",
    target_id: object = "",
    org: Organization | uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. ``actor`` is an account, a name, or None for the system;
    ``target`` may be any mapped object (its table and id are recorded)."""
    if target is not None:
        target_type = target_type or getattr(target, "__tablename__", type(target).__name__)
        target_id = target_id or getattr(target, "id", "")
    if isinstance(actor, Account):
        actor_name, actor_id = actor.username, actor.id
    else:
        actor_name, actor_id = (actor or SYSTEM), None
    org_id = org.id if isinstance(org, Organization) else org
    session.flush()
    # The UPDATE comes first: it takes the lock that serialises appends (see the module doc).
    row = session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .values(seq=AuditChainHead.seq + 1)
        .returning(AuditChainHead.seq, AuditChainHead.hash)
    ).one_or_none()
    if row is None:
        _ensure_head(session)
        return record(
            session,
            action=action,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            org=org_id,
            details=details,
        )
    seq, prev_hash = row
    event = AuditEvent(
        id=new_id(),
        seq=seq,
        at=utcnow(),
        actor=actor_name[:128],
        actor_id=actor_id,
        action=action[:64],
        target_type=str(target_type)[:32],
        target_id=str(target_id or "")[:255],
        org_id=org_id,
        details=_json_safe(details or {}),
        prev_hash=prev_hash,
    )
    event.hash = compute_hash(event)
    session.add(event)
    session.execute(
        update(AuditChainHead).where(AuditChainHead.id == HEAD_ID).values(hash=event.hash)
    )
    session.flush()
    return event


def record_and_commit(session: Session, **kwargs: Any) -> AuditEvent:
    """Record an event about an attempt that fails afterwards (a refused sign-in): commit
    now, since the error that follows rolls the request's transaction back."""
    event = record(session, **kwargs)
    session.commit()
    return event


# --- verification ---------------------------------------------------------------------


@dataclass
class ChainReport:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _events(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        for row in rows:  # a long log need not stay in memory
            session.expunge(row)


def verify_chain(session: Session) -> ChainReport:
    """Walk the chain in order: sequence numbers without gaps, each ``prev_hash`` equal to
    the previous event's ``hash``, each ``hash`` recomputed, and the head at the last event."""
    prev_hash, expected_seq, count = GENESIS_HASH, 1, 0
    for event in _events(session):
        if event.seq != expected_seq:
            return ChainReport(False, count, expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev_hash:
            return ChainReport(
                False, count, event.seq, "prev_hash does not match the previous event"
            )
        if compute_hash(event) != event.hash:
            return ChainReport(False, count, event.seq, "the event was modified (hash mismatch)")
        prev_hash, expected_seq, count = event.hash, expected_seq + 1, count + 1
    head = session.get(AuditChainHead, HEAD_ID)
    if head is not None and (head.seq != count or head.hash != prev_hash):
        return ChainReport(
            False,
            count,
            count + 1,
            f"events after {count} were removed (the head is at {head.seq})",
        )
    return ChainReport(True, count)


# --- reading --------------------------------------------------------------------------


@dataclass
class AuditFilter:
    action: str = ""  # an exact action, or a prefix ending in "." (e.g. "token.")
    actor: str = ""
    org_id: uuid.UUID | None = None
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


def _query(flt: AuditFilter) -> Select[Any]:
    stmt = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if flt.action:
        if flt.action.endswith("."):
            stmt = stmt.where(AuditEvent.action.startswith(flt.action, autoescape=True))
        else:
            stmt = stmt.where(AuditEvent.action == flt.action)
    if flt.actor:
        stmt = stmt.where(AuditEvent.actor == flt.actor.strip().lower())
    if flt.org_id is not None:
        stmt = stmt.where(AuditEvent.org_id == flt.org_id)
    if flt.target_type:
        stmt = stmt.where(AuditEvent.target_type == flt.target_type)
    if flt.target_id:
        stmt = stmt.where(AuditEvent.target_id == flt.target_id)
    if flt.since is not None:
        stmt = stmt.where(AuditEvent.at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(AuditEvent.at < flt.until)
    return stmt


def list_events(
    session: Session, flt: AuditFilter, *, page: int = 1, per_page: int = 50
) -> Page[AuditEvent]:
    """Events matching the filter, newest first."""
    return paginate(session, _query(flt), page=page, per_page=per_page)


def actions(session: Session) -> list[str]:
    """Every action that occurs in the log, for filter menus."""
    return list(session.scalars(select(AuditEvent.action).distinct().order_by(AuditEvent.action)))


def sign_in(session: Session, *, account: Account, via: str) -> AuditEvent:
    """A successful sign-in through ``via`` (web, api)."""
    return record(session, action="auth.login", actor=account, target=account, details={"via": via})


def sign_in_failed(session: Session, *, account_id: uuid.UUID | None, via: str) -> AuditEvent:
    """A refused sign-in through ``via``. Only the id of the account whose password was wrong
    is kept; when no account has the name typed, nothing of what was typed is (the log is
    append-only, and people type passwords into the name field)."""
    return record(
        session,
        action="auth.login_failed",
        actor=SYSTEM,
        target_type="accounts" if account_id is not None else "",
        target_id=str(account_id) if account_id is not None else "",
        details={"via": via, "account": "known" if account_id is not None else "unknown"},
    )
