"""Reacting to pushes: an unsigned digest pushed to a certified product raises a flag.

The registry's push notifications reach the hub as an ``INSERT … ON CONFLICT`` into
``hub_tags`` (``store.registry.hub.record_push``) and ``store registry sync`` writes
``HubTag`` objects; listeners on the Session class (installed when ``store.signing`` is
imported) see both, in the same transaction, so the registry code does not know about
signing. Only SQL Core runs here, on the session's connection, since one listener runs
inside a flush.

A publisher's CI usually pushes first and signs a moment later: the flag is then resolved
by the signature's upload (resolution "signed"), so only pushes that stay unsigned remain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, event, inspect, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import ORMExecuteState, Session

from store.catalog.models import Product
from store.db import new_id, utcnow
from store.registry.models import HubRepository, HubTag
from store.signing.models import (
    CertificationRequest,
    ContentSignature,
    PublisherKey,
    UnsignedPushFlag,
)

_INSTALLED = False
_HUB_TAGS = HubTag.__tablename__


def on_push(
    conn: Connection,
    *,
    repository: str,
    tag: str,
    digest: str,
    pushed_at: datetime | None = None,
    pushed_by: str = "",
) -> bool:
    """Flag this push if it put an unsigned digest on a certified product; True if flagged."""
    if not tag or not digest:
        return False
    products = Product.__table__
    product = conn.execute(
        select(products.c.id, products.c.certified_at).where(products.c.repository == repository)
    ).first()
    if product is None or product.certified_at is None:
        return False
    requests = CertificationRequest.__table__
    certified = conn.scalar(
        select(requests.c.certified_digest)
        .where(requests.c.product_id == product.id, requests.c.status == "approved")
        .order_by(requests.c.decided_at.desc())
        .limit(1)
    )
    if digest == certified:
        return False
    sigs, keys = ContentSignature.__table__, PublisherKey.__table__
    now = utcnow()
    signed = conn.scalar(
        select(sigs.c.id)
        .join(keys, keys.c.id == sigs.c.key_id)
        .where(
            sigs.c.repository == repository,
            sigs.c.digest == digest,
            or_(keys.c.revoked_at.is_(None), keys.c.revoked_at > now),
        )
        .limit(1)
    )
    if signed is not None:
        return False
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    flags = UnsignedPushFlag.__table__
    result = conn.execute(
        module.insert(flags)
        .values(
            id=new_id(),
            product_id=product.id,
            repository=repository,
            tag=tag[:128],
            digest=digest[:100],
            pushed_at=pushed_at or now,
            pushed_by=(pushed_by or "")[:128],
            created_at=now,
            resolved_at=None,
            resolution="",
        )
        .on_conflict_do_nothing(index_elements=["product_id", "tag", "digest"])
    )
    return bool(result.rowcount)


def _repository_name(conn: Connection, repository_id: Any) -> str | None:
    hub = HubRepository.__table__
    return conn.scalar(select(hub.c.name).where(hub.c.id == repository_id))


def _inserted_rows(state: ORMExecuteState) -> list[dict[str, Any]]:
    params = state.parameters
    if isinstance(params, list) and params:
        return [p for p in params if isinstance(p, dict)]
    if isinstance(params, dict) and "digest" in params:
        return [params]
    # ``insert(HubTag).values(...)``: the values are bound inside the statement.
    dialect = state.session.get_bind().dialect
    statement: Any = state.statement
    return [dict(statement.compile(dialect=dialect).params)]


def _on_execute(state: ORMExecuteState) -> None:
    if not state.is_insert:
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) != _HUB_TAGS:
        return
    conn = state.session.connection()
    for row in _inserted_rows(state):
        name = _repository_name(conn, row.get("repository_id"))
        if name:
            on_push(
                conn,
                repository=name,
                tag=str(row.get("name") or ""),
                digest=str(row.get("digest") or ""),
                pushed_at=row.get("pushed_at"),
                pushed_by=str(row.get("pushed_by") or ""),
            )


def _after_flush(session: Session, _context: Any) -> None:
    tags = [o for o in session.new if isinstance(o, HubTag)]
    tags += [
        o
        for o in session.dirty
        if isinstance(o, HubTag) and session.is_modified(o) and _digest_changed(o)
    ]
    if not tags:
        return
    conn = session.connection()
    for tag in tags:
        name = _repository_name(conn, tag.repository_id)
        if name:
            on_push(
                conn,
                repository=name,
                tag=tag.name,
                digest=tag.digest,
                pushed_at=tag.pushed_at,
                pushed_by=tag.pushed_by,
            )


def _digest_changed(tag: HubTag) -> bool:
    return bool(inspect(tag).attrs.digest.history.has_changes())


def install() -> None:
    global _INSTALLED
    if _INSTALLED:
        return
    event.listen(Session, "do_orm_execute", _on_execute)
    event.listen(Session, "after_flush", _after_flush)
    _INSTALLED = True
