"""Registry notifications: pushes update the hub, manifest GETs count as pulls.

The registry delivers at least once (it retries the same event id until it hears 2xx), and
several store processes (hosts behind a balancer) may receive the same event. Each event is
recorded first in ``processed_events`` (unique on source + id) with ``INSERT … ON CONFLICT
DO NOTHING``: a duplicate inserts nothing and is skipped, and the rest of the batch goes
on. Two processes handling the same event concurrently both try the insert; the second
waits for the first's transaction and inserts nothing when it commits, so exactly one acts.

A pull costs a handful of plain statements (:func:`store.registry.hub.count_pull`); the
search documents of the repositories pulled are rewritten afterwards, in batches
(``Outcome.pulled``, :mod:`store.registry.pull_search`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.db import new_id, utcnow
from store.idempotency import ProcessedEvent
from store.observability import metrics
from store.registry import hub
from store.registry.credentials import SYNC_USERNAME
from store.registry.models import HubRepository
from store.registry.scopes import valid_repository

log = logging.getLogger("store.registry.events")
SOURCE = "registry"
MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"


class MalformedEnvelope(ValueError):
    pass


@dataclass
class Outcome:
    processed: int = 0
    duplicates: int = 0
    ignored: int = 0
    # Repositories whose pull counts changed: their search documents are due a refresh.
    pulled: set[uuid.UUID] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {"processed": self.processed, "duplicates": self.duplicates, "ignored": self.ignored}


def parse_time(value: Any) -> datetime:
    """Go's RFC 3339 with nanoseconds (``…18.681590636Z``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return utcnow()
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return utcnow()
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def events_of(envelope: Any) -> list[dict[str, Any]]:
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise MalformedEnvelope('expected {"events": [...]}')
    return [e for e in envelope["events"] if isinstance(e, dict)]


def process(session: Session, envelope: Any, *, defer_search: bool = False) -> Outcome:
    """Act on every event of a notification envelope once. The caller commits.

    The search documents of the repositories pulled are rewritten at the end, once each;
    with ``defer_search`` they are not, and the caller hands ``Outcome.pulled`` to a
    :class:`store.registry.pull_search.PullSearch` after the commit."""
    outcome = Outcome()
    for event in events_of(envelope):
        event_id = event.get("id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
            outcome.ignored += 1
            metrics.registry_event(event.get("action"), "ignored")
            continue
        first, repository_id = _first_delivery(
            session.connection(), event_id, event.get("action"), _pulled_repository(event)
        )
        if not first:
            outcome.duplicates += 1
            metrics.registry_event(event.get("action"), "duplicate")
            continue
        if apply(session, event, outcome, repository_id=repository_id):
            outcome.processed += 1
            metrics.registry_event(event.get("action"), "processed")
        else:
            outcome.ignored += 1
            metrics.registry_event(event.get("action"), "ignored")
    if outcome.pulled and not defer_search:
        hub.refresh_search(session, outcome.pulled)
    return outcome


_processed = ProcessedEvent.__table__
_hub = HubRepository.__table__
# The processed-event insert, built once per dialect: alone, and for a pull with the
# repository's id (RETURNING a subquery: one round trip instead of two).
_record: dict[tuple[str, bool], Any] = {}


def _pulled_repository(event: dict[str, Any]) -> str | None:
    """The repository a pull event names (its id is looked up with the event's record)."""
    target = event.get("target")
    if event.get("action") != "pull" or not isinstance(target, dict):
        return None
    name = target.get("repository")
    return name if isinstance(name, str) else None


def _first_delivery(
    conn: Connection, event_id: str, action: Any, repository: str | None = None
) -> tuple[bool, uuid.UUID | None]:
    """Record the event as processed: False when it already was (a redelivery). With
    ``repository``, also that repository's id in the hub (None when it has none yet)."""
    dialect = conn.dialect.name
    key = (dialect, repository is not None)
    stmt = _record.get(key)
    if stmt is None:
        module = postgresql if dialect == "postgresql" else sqlite
        stmt = module.insert(_processed).on_conflict_do_nothing(
            index_elements=["source", "event_id"]
        )
        if repository is None:
            stmt = stmt.returning(_processed.c.id)
        else:
            repository_id = (
                select(_hub.c.id).where(_hub.c.name == bindparam("p_name")).scalar_subquery()
            )
            stmt = stmt.returning(_processed.c.id, repository_id)
        _record[key] = stmt
    params = {
        "id": new_id(),
        "source": SOURCE,
        "event_id": event_id,
        "event_type": str(action or "")[:100],
        "received_at": utcnow(),
    }
    if repository is not None:
        params["p_name"] = repository
    row = conn.execute(stmt, params).first()
    if row is None:
        return False, None
    return True, (row[1] if repository is not None else None)


def apply(
    session: Session,
    event: dict[str, Any],
    outcome: Outcome,
    *,
    repository_id: uuid.UUID | None = None,
) -> bool:
    """Update the hub for one event; False when the event is of no interest. A counted
    pull's repository is added to ``outcome.pulled`` (its search documents are not
    rewritten here). ``repository_id``: the pulled repository's, when already known."""
    action = event.get("action")
    target = event.get("target") or {}
    request = event.get("request") or {}
    if not isinstance(target, dict) or not isinstance(request, dict):
        return False
    name = target.get("repository")
    if not isinstance(name, str) or not valid_repository(name):
        return False
    media_type = str(target.get("mediaType") or "")
    at = parse_time(event.get("timestamp"))
    if action == "push" and media_type in hub.MANIFEST_MEDIA_TYPES:
        actor = event.get("actor")
        actor = (actor.get("name") if isinstance(actor, dict) else None) or ""  # any shape
        hub.record_push(
            session,
            name=name,
            digest=str(target.get("digest") or ""),
            media_type=media_type,
            size=_int(target.get("size")),
            tag=_tag(target.get("tag")),
            actor=str(actor),
            at=at,
        )
        return True
    if action == "pull" and media_type in hub.MANIFEST_MEDIA_TYPES:
        # HEAD requests (clients checking for updates), blob downloads and ranged resumes
        # also produce pull events; only a manifest GET is a download.
        if str(request.get("method", "")).upper() != "GET":
            return False
        actor = event.get("actor")
        if isinstance(actor, dict) and actor.get("name") == SYNC_USERNAME:
            return False  # the store reading a manifest (details, transfer), not a download
        client = hub.client_key(str(request.get("addr") or ""), str(request.get("useragent") or ""))
        pulled_id, counted = hub.count_pull(
            session,
            name=name,
            at=at,
            media_type=media_type,
            client=client,
            repository_id=repository_id,
        )
        if counted:
            outcome.pulled.add(pulled_id)
        return True
    if action == "delete":
        hub.record_delete(
            session, name=name, tag=_tag(target.get("tag")), digest=_digest(target.get("digest"))
        )
        return True
    return False


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _digest(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _tag(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 128:
        return value
    return None
