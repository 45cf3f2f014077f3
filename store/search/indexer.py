"""Keeping the search index in step with the rows it indexes, in the same transaction.

Listeners on the ORM Session class (installed when ``store.search`` is imported) watch every
flush and every ORM-enabled bulk UPDATE/DELETE/INSERT of products, tiers, organizations and
hub repositories, and collect what changed in the session; the affected search documents
are written on the session's connection just before its transaction commits, all at once
(:func:`write_pending`: on PostgreSQL one statement locks every one of them, in (source,
ref_id) order, so two transactions never wait for each other in a circle), or earlier when
the transaction searches. No other module calls the indexer; writes that bypass the ORM
(raw SQL) call :func:`refresh` themselves (pull counts: ``Changes(pulls=...)``, which
writes only the pull columns), and ``store search reindex`` repairs anything.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    Table,
    bindparam,
    delete,
    event,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql import TextClause
from sqlalchemy.sql.util import find_tables

from store.accounts.models import Organization
from store.catalog.models import Product, Tier
from store.db import read_only_connection, utcnow
from store.registry.models import HubRepository, PullCounter, names_under
from store.search import postgres_fts, sqlite_fts
from store.search.backend import backend_for
from store.search.documents import (
    RECENT_PULL_DAYS,
    Doc,
    hub_documents,
    product_documents,
    pull_columns,
    rank_key,
    read_documents,
)
from store.search.models import SearchDocument
from store.search.query import index_texts
from store.search.workers import WorkerPool

docs_t = cast(Table, SearchDocument.__table__)
_COMPARED = [c.name for c in docs_t.columns if c.name not in ("indexed_at",)]
_COLUMNS = [c.name for c in docs_t.columns]
# One statement for every rewritten document (its rank key may change), run as executemany.
_UPDATE = (
    update(docs_t)
    .where(docs_t.c.id == bindparam("old_id", type_=docs_t.c.id.type))
    .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in docs_t.columns})
)
# PostgreSQL, documents no other transaction had when this one read: inserted unless another
# has inserted one of them meanwhile (same source and ref, or same key; the insert waits for
# that one to end), and those are told by the ref_ids returned (see _insert_new).
_INSERT_NEW = postgresql.insert(docs_t).on_conflict_do_nothing().returning(docs_t.c.ref_id)
# PostgreSQL: a rank key claimed until the transaction ends, before it is probed (_free_key).
_CLAIM_KEY = select(
    func.pg_advisory_xact_lock(bindparam("hi", type_=Integer), bindparam("lo", type_=Integer))
)
_INSTALLED = False
T = TypeVar("T")
_BULK = "store.search.bulk"  # Connection.info flag: a reindex will rebuild the engine index
_PENDING = "store.search.pending"  # Session.info: the Changes its transaction has not written


@dataclass
class Changes:
    products: set[uuid.UUID] = field(default_factory=set)
    repos: set[uuid.UUID] = field(default_factory=set)
    repo_names: set[str] = field(default_factory=set)
    product_repos: set[str] = field(default_factory=set)
    orgs: set[uuid.UUID] = field(default_factory=set)
    deleted_orgs: set[uuid.UUID] = field(default_factory=set)
    # Repositories whose pull counts changed: only the pull columns of their documents and
    # their listings' are brought in step (refresh_pulls).
    pulls: set[uuid.UUID] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any(vars(self).values())

    def merge(self, other: Changes) -> None:
        for name, values in vars(other).items():
            getattr(self, name).update(values)


def _collect(session: Session) -> Changes:
    changes = Changes()
    dirty = [o for o in session.dirty if session.is_modified(o, include_collections=True)]
    for obj in (*session.new, *dirty, *session.deleted):
        if isinstance(obj, Product):
            changes.products.add(obj.id)
            changes.repo_names.add(obj.repository)
        elif isinstance(obj, Tier):
            changes.products.add(obj.product_id)
        elif isinstance(obj, HubRepository):
            changes.repos.add(obj.id)
            changes.product_repos.add(obj.name)
        elif isinstance(obj, Organization):
            changes.orgs.add(obj.id)
    changes.deleted_orgs = {o.id for o in session.deleted if isinstance(o, Organization)}
    return changes


def apply(conn: Connection, changes: Changes) -> int:
    """Rewrite the documents these changes touch; returns how many documents changed."""
    now = utcnow()
    products_t, hub_t = Product.__table__, HubRepository.__table__
    if changes.deleted_orgs:
        conn.execute(delete(docs_t).where(docs_t.c.owner_id.in_(changes.deleted_orgs)))
    product_ids = set(changes.products)
    repo_ids, repo_names = set(changes.repos), set(changes.repo_names)
    if changes.orgs:
        product_ids |= set(
            conn.scalars(
                select(products_t.c.id).where(products_t.c.organization_id.in_(changes.orgs))
            )
        )
        slugs = select(Organization.__table__.c.slug).where(
            Organization.__table__.c.id.in_(changes.orgs)
        )
        repo_ids |= set(conn.scalars(select(hub_t.c.id).where(hub_t.c.namespace.in_(slugs))))
    if repo_ids:
        # A listing's document carries its repository's pull count and activity: a pull
        # (a bulk update of hub_repositories) rewrites the listing too.
        names = select(hub_t.c.name).where(hub_t.c.id.in_(repo_ids))
        product_ids |= set(
            conn.scalars(select(products_t.c.id).where(products_t.c.repository.in_(names)))
        )
    if changes.product_repos:
        product_ids |= set(
            conn.scalars(
                select(products_t.c.id).where(products_t.c.repository.in_(changes.product_repos))
            )
        )
    if repo_names:
        # A product's sub-repositories (acme/app/worker) follow it: their documents too.
        repo_ids |= set(conn.scalars(sub_repositories(conn.dialect.name, repo_names)))
    # Pull counts of repositories rebuilt in full are in their new documents already.
    pulls = changes.pulls - repo_ids
    if conn.dialect.name == "postgresql":
        # The repositories' ids first, as a list: with a subquery OR-ed into the lock
        # statement the planner walked every hub document (1M entries: seconds per write).
        locked = set(repo_ids) | pulls
        if repo_names:
            locked |= set(conn.scalars(select(hub_t.c.id).where(hub_t.c.name.in_(repo_names))))
        listings = set(product_ids)
        if pulls:
            names = select(hub_t.c.name).where(hub_t.c.id.in_(pulls))
            listings |= set(
                conn.scalars(select(products_t.c.id).where(products_t.c.repository.in_(names)))
            )
        _lock(conn, listings, locked)
    written = 0
    if product_ids:
        docs = product_documents(conn, product_ids, now=now)
        written += write(conn, "store", product_ids, docs)
    if repo_ids or repo_names:
        docs = hub_documents(conn, repo_ids, names=repo_names, now=now)
        repo_ids |= {d["ref_id"] for d in docs}
        written += write(conn, "hub", repo_ids, docs)
    if pulls:
        written += _refresh_pulls(conn, pulls, now)
    return written


def sub_repositories(dialect: str, names: Iterable[str]) -> Select[tuple[uuid.UUID]]:
    """The ids of the repositories under these names (``acme/app/...``), by an index range
    on both databases (:func:`store.registry.models.names_under`)."""
    hub_t = cast(Table, HubRepository.__table__)
    return select(hub_t.c.id).where(or_(*(names_under(n, dialect) for n in sorted(names))))


def _lock(conn: Connection, products: Any, repos: Any) -> None:
    """PostgreSQL (READ COMMITTED): lock the stored documents of these products and hub
    repositories (ids), before they are read and built. A document's key is its rank key and
    moves when its badges or popularity change: an UPDATE by the key read before another writer
    moved the document (and committed) would match nothing, and the change (a repository made
    private, a pull count) would be lost. Locked first (by their unique source and ref), a
    writer of one of them that has not committed yet is waited for, and everything read
    afterwards, the rows documents are built from included, is what it committed; nobody moves
    them until this transaction ends. One statement, in (source, ref_id) order, so two writers
    of the same documents take their locks in the same order; a session's transaction takes
    it once, at its commit (:func:`write_pending`), for every document it writes."""
    query = (
        select(docs_t.c.id)
        .where(
            ((docs_t.c.source == "store") & docs_t.c.ref_id.in_(products))
            | ((docs_t.c.source == "hub") & docs_t.c.ref_id.in_(repos))
        )
        .order_by(docs_t.c.source, docs_t.c.ref_id)
        .with_for_update()
    )
    conn.execute(query)


def write(
    conn: Connection,
    source: str,
    ref_ids: Iterable[uuid.UUID],
    docs: Sequence[Doc],
    *,
    since: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Make the stored documents of these refs equal to ``docs`` (missing ones are deleted).

    ``since``: the documents were read (a full reindex beside other writers, or in this
    transaction at READ COMMITTED, where every statement sees what others committed
    before it) at ``since`` or later. A stored document written after ``since`` may have
    been written by another transaction from rows changed after the read: it is built
    again here (at ``now``, default ``since``), from the rows as this transaction sees
    them; a document of a product or repository deleted meanwhile is not written again.
    PostgreSQL: the documents this writes are locked ``FOR UPDATE`` and compared with what
    was read first (:func:`_settle`): a writer of one of them that has not committed yet
    is waited for, and what it committed is what is built again (documents left as they
    are stay unlocked)."""
    ref_ids = set(ref_ids)
    if not ref_ids:
        return 0
    existing = _stored(conn, source, ref_ids)
    wanted = {d["ref_id"]: d for d in docs}
    if since is not None:
        if conn.dialect.name == "postgresql":
            wanted = _settle(conn, source, ref_ids, existing, wanted, since, now or since)
        else:
            wanted = _current(conn, source, existing, wanted, since, now or since)
    gone = [existing[r]["id"] for r in ref_ids - wanted.keys() if r in existing]
    if gone:
        conn.execute(delete(docs_t).where(docs_t.c.id.in_(gone)))
    todo = [doc for ref_id, doc in wanted.items() if _differs(existing.get(ref_id), doc)]
    if not todo:
        return len(gone)
    holders = dict(
        conn.execute(
            select(docs_t.c.id, docs_t.c.ref_id).where(docs_t.c.id.in_([d["id"] for d in todo]))
        ).all()
    )
    inserts = []
    updates: list[dict[str, Any]] = []  # executed together (executemany), in this order

    def flush_updates() -> None:
        if updates:
            conn.execute(_UPDATE, updates)
            updates.clear()

    # Keys taken by this batch's documents, which the database does not hold yet (two new
    # documents of one transaction whose natural keys collide); assigned in ref_id order.
    taken: set[int] = set()
    todo.sort(key=itemgetter("ref_id"))
    for doc in todo:
        holder = holders.get(doc["id"])
        if (holder is not None and holder != doc["ref_id"]) or doc["id"] in taken:
            flush_updates()  # the probe sees the keys the updates before it took
            doc["id"] = _free_key(conn, doc["id"] + 1, doc["ref_id"], taken)
        taken.add(doc["id"])
        old = existing.get(doc["ref_id"])
        if old is None:
            inserts.append(doc)
        else:
            updates.append({"old_id": old["id"], **{f"v_{c}": doc[c] for c in _COLUMNS}})
    flush_updates()
    lost: list[Doc] = []
    if inserts:
        if conn.info.get(_BULK) or since is not None:
            lost = _insert_bulk(conn, inserts)
        elif conn.dialect.name == "postgresql":
            lost = _insert_new(conn, inserts)
        else:
            conn.execute(docs_t.insert(), inserts)
        if lost:
            todo = [doc for doc in todo if all(doc is not other for other in lost)]
    if not conn.info.get(_BULK):
        backend_for(conn).after_write(conn, todo)
    written = len(todo) + len(gone)
    if lost:
        written += _write_again(conn, source, {doc["ref_id"] for doc in lost})
    return written


def _insert_new(conn: Connection, docs: list[Doc]) -> list[Doc]:
    """PostgreSQL: insert these documents, which were missing when read; those another
    transaction inserted meanwhile (its insert waited for, then found committed: a document
    of the same row, or one at the same key) are not inserted, and returned."""
    inserted = set(conn.scalars(_INSERT_NEW, docs))
    return [doc for doc in docs if doc["ref_id"] not in inserted]


def _write_again(conn: Connection, source: str, ref_ids: set[uuid.UUID]) -> int:
    """The documents of these refs built again and written, after another transaction
    inserted one of them (or a document at their key) and committed: the stored documents
    are locked first, as :func:`_lock` does, and the rows read after that, so what the other
    transaction committed is built upon and not overwritten with what was read before it."""
    _stored(conn, source, ref_ids, lock=True)
    build = product_documents if source == "store" else hub_documents
    return write(conn, source, ref_ids, build(conn, ref_ids, now=utcnow()))


def _current(
    conn: Connection,
    source: str,
    existing: dict[uuid.UUID, dict[str, Any]],
    wanted: dict[uuid.UUID, Doc],
    since: datetime,
    now: datetime,
) -> dict[uuid.UUID, Doc]:
    """``wanted`` without the documents of rows deleted meanwhile, and with the documents
    stored after ``since`` built again from the rows as this transaction sees them."""
    source_t = cast(Table, (Product if source == "store" else HubRepository).__table__)
    alive = set(conn.scalars(select(source_t.c.id).where(source_t.c.id.in_(wanted))))
    current = {r: d for r, d in wanted.items() if r in alive}
    newer = [r for r, row in existing.items() if row["indexed_at"] > since]
    if newer:
        build = product_documents if source == "store" else hub_documents
        current.update((d["ref_id"], d) for d in build(conn, newer, now=now))
    return current


def _settle(
    conn: Connection,
    source: str,
    ref_ids: set[uuid.UUID],
    existing: dict[uuid.UUID, dict[str, Any]],
    wanted: dict[uuid.UUID, Doc],
    since: datetime,
    now: datetime,
) -> dict[uuid.UUID, Doc]:
    """PostgreSQL (READ COMMITTED): :func:`_current`, written only over documents as their
    writers committed them. The documents to be written are locked (``FOR UPDATE``: a
    writer of one of them that has not committed yet is waited for, and the read returns
    what it committed) and compared with what was read; those changed meanwhile are read
    and built again, under the lock. The documents left as they are are never locked:
    their writers do not wait for the rest of a reindex. No savepoint: a reindex of many
    batches would overflow the subtransactions other sessions' snapshots can list.
    ``existing`` is brought up to date in place."""
    current = _current(conn, source, existing, wanted, since, now)
    held: set[uuid.UUID] = set()
    while True:
        writes = {
            r
            for r in ref_ids
            if (r in current and _differs(existing.get(r), current[r]))
            or (r in existing and r not in current)
        }
        if writes <= held:
            return current
        locked = _stored(conn, source, writes - held, lock=True)
        changed = {r for r in writes - held if locked.get(r) != existing.get(r)}
        held |= writes
        if not changed:
            return current
        for r in changed:
            if r in locked:
                existing[r] = locked[r]
            else:
                existing.pop(r, None)
        current = _current(conn, source, existing, wanted, since, now)


def _stored(
    conn: Connection, source: str, ref_ids: Iterable[uuid.UUID], *, lock: bool = False
) -> dict[uuid.UUID, dict[str, Any]]:
    """The stored documents of these refs (``lock``: ``FOR UPDATE``, in ref_id order as
    :func:`_lock` takes them)."""
    query = select(docs_t).where(docs_t.c.source == source, docs_t.c.ref_id.in_(list(ref_ids)))
    if lock:
        query = query.order_by(docs_t.c.ref_id).with_for_update()
    return {row.ref_id: row._asdict() for row in conn.execute(query)}


def _differs(stored: dict[str, Any] | None, doc: Doc) -> bool:
    return stored is None or any(stored[c] != doc[c] for c in _COMPARED)


def _processors_for(dialect: Any) -> list[Callable[[Any], Any] | None]:
    processors = _processors.get(dialect.name)
    if processors is None:
        processors = _processors[dialect.name] = [
            docs_t.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in _COLUMNS
        ]
    return processors


def _bound(processors: Sequence[Callable[[Any], Any] | None], doc: Doc) -> tuple[Any, ...]:
    return tuple(v if p is None else p(v) for p, v in zip(processors, _VALUES(doc), strict=True))


# A document's values as the driver takes them, but its key (which write() may still
# change), made beside the document where it was read (a full reindex's worker process).
_BOUND = "_bound"
_VALUES = itemgetter(*_COLUMNS)
assert _COLUMNS[0] == "id"


def read_bound_documents(
    url: str, source: str, now: datetime, ids: Sequence[uuid.UUID]
) -> list[Doc]:
    """:func:`read_documents`, each document with its values bound for ``url``'s driver
    (``_bound``): a SQLite full reindex's worker processes do that work, the reindexing
    process only hands the values to the driver (:func:`_insert_bulk`)."""
    docs = read_documents(url, source, now, ids)
    processors = _processors_for(make_url(url).get_dialect()())
    for doc in docs:
        doc[_BOUND] = _bound(processors, doc)[1:]
    return docs


_STAGED = "search_documents_copy"  # PostgreSQL: a reindex's new documents, before insertion


def _insert_bulk(conn: Connection, docs: Sequence[Doc]) -> list[Doc]:
    """Insert new documents (a full reindex): each row's values made by the columns' own
    bind processors, as SQLAlchemy's insert would (or already, by the worker that read
    the document), and handed to the driver at once (SQLite: one executemany; PostgreSQL:
    COPY), without a statement's per-row parameter handling.

    PostgreSQL: another transaction may insert one of these documents meanwhile (a
    listener, a pull refresh: the document was missing when the reindex read it), and a
    COPY into ``search_documents`` would wait for it and then fail (unique violation), the
    whole reindex with it. So the rows are copied into a temporary table and inserted from
    there with ``ON CONFLICT DO NOTHING``: those another transaction inserted (and
    committed; the insert waits for it) are returned, as :func:`_insert_new` does, and
    :func:`write` builds them again over what it committed."""
    dialect = conn.dialect
    processors = _processors_for(dialect)
    rows = [(d["id"], *d[_BOUND]) if _BOUND in d else _bound(processors, d) for d in docs]
    columns = ", ".join(_COLUMNS)
    if dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGED} "
            "(LIKE search_documents INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {_STAGED} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        inserted = set(
            conn.scalars(
                text(
                    f"INSERT INTO search_documents ({columns}) "  # noqa: S608
                    f"SELECT {columns} FROM {_STAGED} ORDER BY id "
                    "ON CONFLICT DO NOTHING RETURNING ref_id"
                ).columns(docs_t.c.ref_id)
            )
        )
        conn.exec_driver_sql(f"TRUNCATE {_STAGED}")
        return [doc for doc in docs if doc["ref_id"] not in inserted]
    marks = ", ".join("?" for _ in _COLUMNS)
    conn.exec_driver_sql(f"INSERT INTO search_documents ({columns}) VALUES ({marks})", rows)  # noqa: S608
    return []


_processors: dict[str, list[Callable[[Any], Any] | None]] = {}


def _free_key(conn: Connection, key: int, ref_id: uuid.UUID, taken: set[int]) -> int:
    # Rank keys end in 50 bits of the document's id; on the rare collision, probe upward.
    # PostgreSQL: each key is claimed before it is looked at (an advisory lock held to the
    # commit), so two writers probing at once (whose uncommitted documents the other's read
    # does not see) take turns: the second sees the key the first took, and goes on up.
    # A document written at its own key claims nothing: for it to be taken by a probe too,
    # its id would have to share its 50 bits with the key, a second collision.
    # ``taken``: keys this write has given other documents already (not in the table yet).
    postgres = conn.dialect.name == "postgresql"
    while True:
        if key in taken:
            key += 1
            continue
        if postgres:
            low = key & 0xFFFF_FFFF
            conn.execute(_CLAIM_KEY, {"hi": key >> 32, "lo": low - (1 << 32) * (low >> 31)})
        holder = conn.scalar(select(docs_t.c.ref_id).where(docs_t.c.id == key))
        if holder is None or holder == ref_id:
            return key
        key += 1


def refresh(
    session: Session,
    *,
    products: Iterable[uuid.UUID] = (),
    repositories: Iterable[uuid.UUID] = (),
    repository_names: Iterable[str] = (),
) -> None:
    """Re-index some rows in this session's transaction (for writers that bypass the ORM):
    written with its other documents before it commits (:func:`write_pending`)."""
    names = set(repository_names)
    later(
        session,
        Changes(
            products=set(products), repos=set(repositories), repo_names=names, product_repos=names
        ),
    )


def later(session: Session, changes: Changes) -> None:
    """Documents to write before this session's transaction commits."""
    if changes:
        pending = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = Changes()
        pending.merge(changes)


def write_pending(session: Session) -> int:
    """Write the documents this session's transaction has changed so far (:func:`apply`:
    on PostgreSQL one lock statement for all of them, in (source, ref_id) order); how many
    changed. Run before each commit, and before a search reads the index in a transaction
    that wrote (its own changes are found)."""
    changes = session.info.pop(_PENDING, None)
    if not changes:
        return 0
    return apply(session.connection(), changes)


# --- pull counts ----------------------------------------------------------------------

_PULL_COLUMNS = ("pull_count", "star_count", "popularity", "pulls_30d")
_BADGES = ("official", "certified", "verified")


def _pull_rows() -> Any:
    """For each repository: its pull figures and, beside them, its own document and its
    listing's (if it is a product's repository), with their stored pull columns; a missing
    document gives NULLs (``doc_id``). On PostgreSQL the documents were locked first
    (:func:`apply`), so what this reads is what their last writer committed."""
    hub_t, products_t = cast(Table, HubRepository.__table__), cast(Table, Product.__table__)
    pulls_t = cast(Table, PullCounter.__table__)
    recent = (
        select(func.coalesce(func.sum(pulls_t.c.count), 0))
        .where(
            pulls_t.c.repository_id == hub_t.c.id,
            pulls_t.c.day >= bindparam("since", type_=pulls_t.c.day.type),
        )
        .scalar_subquery()
    )
    wanted = hub_t.c.id.in_(bindparam("ids", expanding=True))
    docs = docs_t
    columns = (
        hub_t.c.id.label("repo_id"),
        hub_t.c.pull_count.label("pulls"),
        hub_t.c.star_count.label("stars"),
        hub_t.c.last_pushed_at,
        hub_t.c.last_pulled_at,
        hub_t.c.created_at,
        recent.label("recent"),
        docs.c.id.label("doc_id"),
        docs.c.ref_id,
        docs.c.official,
        docs.c.certified,
        docs.c.verified,
        *(docs.c[c].label(f"doc_{c}") for c in _PULL_COLUMNS),
    )
    own = (
        select(literal_column("'hub'").label("source"), *columns)
        .select_from(
            hub_t.outerjoin(docs, (docs.c.source == "hub") & (docs.c.ref_id == hub_t.c.id))
        )
        .where(wanted)
    )
    listing = (
        select(literal_column("'store'").label("source"), *columns)
        .select_from(
            hub_t.join(products_t, products_t.c.repository == hub_t.c.name).outerjoin(
                docs, (docs.c.source == "store") & (docs.c.ref_id == products_t.c.id)
            )
        )
        .where(wanted)
    )
    return union_all(own, listing)


_PULL_ROWS = _pull_rows()
_PULL_VALUES = {c: bindparam(f"v_{c}", type_=docs_t.c[c].type) for c in _PULL_COLUMNS}
_INDEXED_AT = bindparam("v_indexed_at", type_=docs_t.c.indexed_at.type)
# The rank key unchanged: no indexed column is written (SQLite's FTS trigger fires on an
# UPDATE OF the key or the text columns only; PostgreSQL's term rows are not touched).
_PULL_UPDATE = (
    update(docs_t)
    .where(docs_t.c.id == bindparam("old_id", type_=docs_t.c.id.type))
    .values(**_PULL_VALUES, indexed_at=_INDEXED_AT)
)
# The rank key moved: the engine structures follow (SQLite: the trigger re-files the row
# under its new rowid; PostgreSQL: ON UPDATE CASCADE, then SearchBackend.after_move).
_PULL_MOVE = (
    update(docs_t)
    .where(docs_t.c.id == bindparam("old_id", type_=docs_t.c.id.type))
    .values(id=bindparam("v_id", type_=docs_t.c.id.type), **_PULL_VALUES, indexed_at=_INDEXED_AT)
)


def refresh_pulls(conn: Connection, repository_ids: Iterable[uuid.UUID]) -> int:
    """Bring the pull columns (:data:`_PULL_COLUMNS` and the rank key that popularity is
    part of) of these repositories' documents and their listings' in step with the counts
    (:func:`store.registry.hub.count_pull`), writing only those columns: one read and
    at most one UPDATE per kind of change, no document rebuilt, no text tokenized, and the
    full-text index touched only when the rank key moves. A repository whose documents are
    missing (or that is gone) is rebuilt as any change is (:func:`apply`). Returns how many
    documents changed. (A session's transaction asks for this with
    ``later(session, Changes(pulls=...))``, written with its other documents.)"""
    return apply(conn, Changes(pulls=set(repository_ids)))


def _refresh_pulls(conn: Connection, ids: set[uuid.UUID], now: datetime) -> int:
    """:func:`refresh_pulls` once the documents are locked (PostgreSQL, :func:`apply`)."""
    since = (now - timedelta(days=RECENT_PULL_DAYS - 1)).date()
    rows = conn.execute(_PULL_ROWS, {"ids": list(ids), "since": since}).all()
    rebuild = ids - {r.repo_id for r in rows} | {r.repo_id for r in rows if r.doc_id is None}
    stays: list[dict[str, Any]] = []
    moves: list[tuple[int, dict[str, Any]]] = []  # (old key, new values)
    for r in rows:
        if r.doc_id is None or r.repo_id in rebuild:
            continue
        new = pull_columns(
            pulls=r.pulls,
            stars=r.stars,
            recent=int(r.recent or 0),
            last_pushed_at=r.last_pushed_at,
            last_pulled_at=r.last_pulled_at,
            created_at=r.created_at,
            now=now,
        )
        if all(new[c] == getattr(r, f"doc_{c}") for c in _PULL_COLUMNS):
            continue
        values = {f"v_{c}": new[c] for c in _PULL_COLUMNS}
        values.update(old_id=r.doc_id, v_indexed_at=now)
        if new["popularity"] == r.doc_popularity:
            stays.append(values)  # the same rank (a probed key stays where it is)
        else:
            badges = {"official": r.official, "certified": r.certified, "verified": r.verified}
            key = rank_key({**badges, "popularity": new["popularity"], "ref_id": r.ref_id})
            moves.append((r.doc_id, {**values, "v_id": key, "ref_id": r.ref_id}))
    if stays:
        conn.execute(_PULL_UPDATE, stays)
    moved = _move(conn, moves) if moves else []
    if moved:
        backend_for(conn).after_move(conn, moved)
    written = len(stays) + len(moves)
    if rebuild:
        written += apply(conn, Changes(repos=rebuild))
    return written


def _move(conn: Connection, moves: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, int]]:
    """Give these documents their new rank keys (probing upward on the rare collision, as
    :func:`write` does); the (old, new) keys."""
    holders = dict(
        conn.execute(
            select(docs_t.c.id, docs_t.c.ref_id).where(
                docs_t.c.id.in_([values["v_id"] for _, values in moves])
            )
        ).all()
    )
    pending: list[dict[str, Any]] = []
    moved = []
    taken: set[int] = set()  # as write() does
    for old, values in sorted(moves, key=lambda move: move[1]["ref_id"]):
        ref_id = values.pop("ref_id")
        holder = holders.get(values["v_id"])
        if (holder is not None and holder != ref_id) or values["v_id"] in taken:
            if pending:  # the probe sees the keys the moves before it took
                conn.execute(_PULL_MOVE, pending)
                pending = []
            values["v_id"] = _free_key(conn, values["v_id"] + 1, ref_id, taken)
        taken.add(values["v_id"])
        pending.append(values)
        moved.append((old, values["v_id"]))
    conn.execute(_PULL_MOVE, pending)
    return moved


# A reindex of at least this many documents builds their text in worker processes too.
PARALLEL_FROM = 20_000


def _workers_for(documents: int) -> int:
    return max(0, (os.cpu_count() or 1) - 1) if documents >= PARALLEL_FROM else 0


def reindex(
    conn: Connection,
    *,
    batch: int = 2000,
    rebuild: bool = True,
    workers: int | None = None,
    committed: bool = False,
) -> dict[str, int]:
    """Rebuild every document from the source tables and (``rebuild``) the full-text
    structures from scratch, in one pass: row-by-row index maintenance stops meanwhile
    (SQLite: the triggers; PostgreSQL: search_fts_terms writes) and rebuild() follows, all
    in the caller's transaction. Without ``rebuild``, documents are written (and indexed)
    one by one, like any other change. ``workers``: processes that build the documents'
    text (and PostgreSQL's tsvector literals) beside this one (default: one per other
    core, for PARALLEL_FROM documents or more; 0: none). ``committed``: the caller's
    transaction has written none of the rows documents are made of (``store search
    reindex``), so the workers read and build whole documents on connections of their own
    while this one only writes, a batch ahead of it.

    Documents are read before they are written, and between the two another transaction
    may commit a change of their rows (workers read on connections of their own; on
    PostgreSQL, at READ COMMITTED, so does a read in this transaction): each batch is
    written with ``since`` (:func:`write`), so a document another transaction wrote
    meanwhile is built again from the rows as they are then, never overwritten with the
    one read before. On PostgreSQL ``since`` is the start less a margin for hosts whose
    clocks run behind (postgres_fts._CLOCK_MARGIN_S): a few more documents are built
    again, which only costs time."""
    now = utcnow()
    since = now
    if conn.dialect.name == "postgresql":
        since = now - timedelta(seconds=postgres_fts._CLOCK_MARGIN_S)
    counts = {"store": 0, "hub": 0, "changed": 0}
    backend = backend_for(conn)
    sources: tuple[tuple[str, Any, Callable[..., list[Doc]]], ...] = (
        ("store", Product.__table__, product_documents),
        ("hub", HubRepository.__table__, hub_documents),
    )
    all_ids = [list(conn.scalars(select(table.c.id))) for _, table, _ in sources]
    if workers is None:
        workers = _workers_for(sum(map(len, all_ids)))
    pool = WorkerPool(workers) if workers > 0 else None
    texts = pool.texts if pool is not None else index_texts
    url = _shared_url(conn) if pool is not None and committed else None
    if rebuild:
        backend.begin_bulk(conn)
        conn.info[_BULK] = True
    try:
        for (source, table, build), ids in zip(sources, all_ids, strict=True):
            chunks = [ids[start : start + batch] for start in range(0, len(ids), batch)]
            if pool is not None and url is not None:
                read = partial(read_documents, url, source, now)
                pending = [pool.start(read, chunks[0])] if chunks else []
                for i, chunk in enumerate(chunks):
                    if i + 1 < len(chunks):
                        pending.append(pool.start(read, chunks[i + 1]))
                    docs = pending.pop(0).result()
                    counts["changed"] += write(conn, source, chunk, docs, since=since, now=now)
                    counts[source] += len(docs)
            else:
                for chunk in chunks:
                    docs = build(conn, chunk, now=now, texts=texts)
                    counts["changed"] += write(conn, source, chunk, docs, since=since, now=now)
                    counts[source] += len(docs)
            # Documents of rows that are gone (not those of rows added since the ids were
            # listed: their writers indexed them).
            counts["changed"] += _delete_stale(conn, source, table, batch)
        conn.info.pop(_BULK, None)
        if rebuild:
            backend.rebuild(conn, pool)
    finally:
        conn.info.pop(_BULK, None)
        if pool is not None:
            pool.close()
    return counts


_SOURCES: tuple[tuple[str, Any, Callable[..., list[Doc]]], ...] = (
    ("store", Product.__table__, product_documents),
    ("hub", HubRepository.__table__, hub_documents),
)


def _delete_stale(conn: Connection, source: str, table: Table, batch: int) -> int:
    """Delete the documents of ``source`` whose row in ``table`` is gone, ``batch`` at a
    time; how many."""
    stale = list(
        conn.scalars(
            select(docs_t.c.id).where(
                docs_t.c.source == source, ~exists().where(table.c.id == docs_t.c.ref_id)
            )
        )
    )
    for start in range(0, len(stale), batch):
        conn.execute(delete(docs_t).where(docs_t.c.id.in_(stale[start : start + batch])))
    return len(stale)


def full_reindex(
    engine: Engine, *, batch: int = 2000, fill_batch: int = 5000, workers: int | None = None
) -> dict[str, int]:
    """``store search reindex``: :func:`reindex` of the committed rows, beside live traffic.

    PostgreSQL: one transaction (writers of other rows go on; the full-text tables are
    built beside and swapped, postgres_fts.rebuild). SQLite, where a transaction that
    writes holds the one write lock: short transactions of their own, other writers
    taking their turns between them: new full-text tables made beside the live ones
    (sqlite_fts.begin_build), then the documents, a batch of products or repositories
    per transaction (read and built outside it: by the worker processes when there are
    any, on connections of their own), those it inserts indexed only in the new tables;
    then the new tables filled from search_documents, ``fill_batch`` documents per
    transaction, kept in step with every later write by triggers, and swapped in by one
    last transaction. Searches answer from the live tables throughout, which their
    triggers keep in step; a build that stops part-way leaves them as they are and its own
    tables to the next reindex, which drops them first (docs/search.md)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            return reindex(conn, batch=batch, workers=workers, committed=True)
    now = utcnow()
    counts = {"store": 0, "hub": 0, "changed": 0}
    with read_only_connection(engine) as conn:
        all_ids = [list(conn.scalars(select(table.c.id))) for _, table, _ in _SOURCES]
    if workers is None:
        workers = _workers_for(sum(map(len, all_ids)))
    pool = WorkerPool(workers) if workers > 0 else None
    texts = pool.texts if pool is not None else index_texts
    url = _shared_url(engine) if pool is not None else None

    def write_chunk(conn: Connection, source: str, chunk: list[uuid.UUID], docs: list[Doc]) -> None:
        sqlite_fts.quiet(conn, True)
        counts["changed"] += write(conn, source, chunk, docs, since=now)
        sqlite_fts.quiet(conn, False)
        counts[source] += len(docs)

    def delete_stale(conn: Connection, source: str, table: Table) -> None:
        # Documents of rows deleted before the reindex began (those deleted since were
        # deleted by their writers).
        counts["changed"] += _delete_stale(conn, source, table, batch)

    _step(engine, sqlite_fts.begin_build)
    try:
        for (source, table, _), ids in zip(_SOURCES, all_ids, strict=True):
            for chunk, docs in _read_ahead(engine, pool, url, source, now, ids, batch, texts):
                _step(engine, write_chunk, source, chunk, docs)
            _step(engine, delete_stale, source, table)
    finally:
        if pool is not None:
            pool.close()
    while not _step(engine, sqlite_fts.fill, fill_batch):
        pass
    _step(engine, sqlite_fts.swap)
    while not _step(engine, sqlite_fts.empty_old):
        pass
    _step(engine, sqlite_fts.drop_old)
    return counts


def _step(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    """One step of a reindex beside other writers: ``fn(conn, *args)`` in a transaction
    of its own."""
    with engine.begin() as conn:
        return fn(conn, *args)


def _read_ahead(
    engine: Engine,
    pool: WorkerPool | None,
    url: str | None,
    source: str,
    now: datetime,
    ids: Sequence[uuid.UUID],
    batch: int,
    texts: Callable[[Sequence[Any]], list[str]],
) -> Iterator[tuple[list[uuid.UUID], list[Doc]]]:
    """The ids in chunks, each with its documents read and built outside any transaction
    that writes: by the workers on their own connections (the next chunk begun while the
    caller writes this one), or here on a read-only connection."""
    chunks = [list(ids[start : start + batch]) for start in range(0, len(ids), batch)]
    if pool is None or url is None:
        build = product_documents if source == "store" else hub_documents
        for chunk in chunks:
            with read_only_connection(engine) as conn:
                docs = build(conn, chunk, now=now, texts=texts)
            yield chunk, docs
        return
    read = partial(read_bound_documents, url, source, now)
    pending = [pool.start(read, chunks[0])] if chunks else []
    for i, chunk in enumerate(chunks):
        if i + 1 < len(chunks):
            pending.append(pool.start(read, chunks[i + 1]))
        yield chunk, pending.pop(0).result()


def _shared_url(conn: Connection | Engine) -> str | None:
    """The database's URL for another process's connections (None: a private in-memory
    SQLite database no other process can open)."""
    url = conn.engine.url
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return None
    return url.render_as_string(hide_password=False)


# --- listeners ------------------------------------------------------------------------

_WATCHED = {
    cast(Table, model.__table__).name: kind
    for model, kind in (
        (Product, "products"),
        (Tier, "tiers"),
        (HubRepository, "repos"),
        (Organization, "orgs"),
    )
}


def _after_flush(session: Session, _flush_context: Any) -> None:
    later(session, _collect(session))


def _before_commit(session: Session) -> None:
    """The transaction's documents written, in it, just before it commits (a savepoint's
    release leaves them to the transaction's end)."""
    if session.in_nested_transaction():
        return
    session.flush()  # the commit's own flush comes after this hook: its changes too
    write_pending(session)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # committed (written) or rolled back (nothing to write)
        session.info.pop(_PENDING, None)


def _reads_index(statement: Any) -> bool:
    if isinstance(statement, TextClause):
        return "search_" in statement.text
    return any(t.name.startswith("search_") for t in find_tables(statement, include_joins=True))


def _before_read(state: ORMExecuteState) -> None:
    """A read of the index through a session whose transaction has documents to write
    writes them first: a transaction finds its own changes (as autoflush does for rows)."""
    if _PENDING in state.session.info and state.is_select and _reads_index(state.statement):
        write_pending(state.session)


def _ids_for(conn: Connection, table: Any, whereclause: Any) -> list[Any]:
    key = table.c.product_id if table.name == "tiers" else table.c.id
    stmt = select(key)
    if whereclause is not None:
        stmt = stmt.where(whereclause)
    return list(conn.scalars(stmt))


def _changes_for(kind: str, ids: Iterable[Any]) -> Changes:
    ids = set(ids)
    if kind in ("products", "tiers"):
        return Changes(products=ids)
    if kind == "repos":
        return Changes(repos=ids)
    return Changes(orgs=ids)


def _bulk_statement(state: ORMExecuteState) -> Any:
    """Index rows touched by ``session.execute(update(X)/delete(X)/insert(X))``."""
    if not (state.is_update or state.is_delete or state.is_insert):
        return None
    table = getattr(state.statement, "table", None)
    kind = _WATCHED.get(getattr(table, "name", ""))
    if kind is None:
        return None
    session = state.session
    if state.is_insert:
        params = state.parameters if isinstance(state.parameters, list) else [state.parameters]
        names = {p.get("name") or p.get("repository") for p in params if isinstance(p, dict)}
        names.discard(None)
        ids = {p.get("id") for p in params if isinstance(p, dict)} - {None}
        if kind == "repos":
            later(session, Changes(repos=ids, repo_names=names))  # type: ignore[arg-type]
        elif kind == "products":
            later(session, Changes(products=ids, product_repos=names))  # type: ignore[arg-type]
        return None
    bulk_ids = _ids_for(session.connection(), table, getattr(state.statement, "whereclause", None))
    if kind == "orgs" and state.is_delete:
        later(session, Changes(deleted_orgs=set(bulk_ids)))
    else:
        later(session, _changes_for(kind, bulk_ids))
    return None


def install() -> None:
    """Register the listeners on every Session (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _bulk_statement)
    event.listen(Session, "do_orm_execute", _before_read)
    event.listen(Session, "before_commit", _before_commit)
    event.listen(Session, "after_transaction_end", _after_transaction_end)
    _INSTALLED = True
