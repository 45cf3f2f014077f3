"""Keeping the search index in step with the rows it indexes, in the same transaction.

Listeners on the ORM Session class (installed when ``store.search`` is imported) watch every
flush and every ORM-enabled bulk UPDATE/DELETE/INSERT of products, tiers, organizations and
hub repositories, and rewrite the affected search documents on the flushing connection.
No other module calls the indexer; writes that bypass the ORM (raw SQL) call
:func:`refresh` themselves, and ``store search reindex`` repairs anything.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, event, or_, select, update
from sqlalchemy.orm import ORMExecuteState, Session

from store.accounts.models import Organization
from store.catalog.models import Product, Tier
from store.db import utcnow
from store.registry.models import HubRepository
from store.search.backend import backend_for
from store.search.documents import Doc, hub_documents, product_documents
from store.search.models import SearchDocument
from store.search.query import TextJob, index_texts

docs_t = cast(Table, SearchDocument.__table__)
_COMPARED = [c.name for c in docs_t.columns if c.name not in ("indexed_at",)]
_COLUMNS = [c.name for c in docs_t.columns]
# One statement for every rewritten document (its rank key may change), run as executemany.
_UPDATE = (
    update(docs_t)
    .where(docs_t.c.id == bindparam("old_id", type_=docs_t.c.id.type))
    .values({c.name: bindparam(f"v_{c.name}", type_=c.type) for c in docs_t.columns})
)
_INSTALLED = False
_BULK = "store.search.bulk"  # Connection.info flag: a reindex will rebuild the engine index


@dataclass
class Changes:
    products: set[uuid.UUID] = field(default_factory=set)
    repos: set[uuid.UUID] = field(default_factory=set)
    repo_names: set[str] = field(default_factory=set)
    product_repos: set[str] = field(default_factory=set)
    orgs: set[uuid.UUID] = field(default_factory=set)
    deleted_orgs: set[uuid.UUID] = field(default_factory=set)

    def __bool__(self) -> bool:
        return any(vars(self).values())


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
        under = [hub_t.c.name.startswith(n + "/", autoescape=True) for n in repo_names]
        repo_ids |= set(conn.scalars(select(hub_t.c.id).where(or_(*under))))
    written = 0
    if product_ids:
        docs = product_documents(conn, product_ids, now=now)
        written += write(conn, "store", product_ids, docs)
    if repo_ids or repo_names:
        docs = hub_documents(conn, repo_ids, names=repo_names, now=now)
        repo_ids |= {d["ref_id"] for d in docs}
        written += write(conn, "hub", repo_ids, docs)
    return written


def write(conn: Connection, source: str, ref_ids: Iterable[uuid.UUID], docs: Sequence[Doc]) -> int:
    """Make the stored documents of these refs equal to ``docs`` (missing ones are deleted)."""
    ref_ids = set(ref_ids)
    if not ref_ids:
        return 0
    existing = {
        row.ref_id: row._asdict()
        for row in conn.execute(
            select(docs_t).where(docs_t.c.source == source, docs_t.c.ref_id.in_(ref_ids))
        )
    }
    wanted = {d["ref_id"]: d for d in docs}
    gone = [existing[r]["id"] for r in ref_ids - wanted.keys() if r in existing]
    if gone:
        conn.execute(delete(docs_t).where(docs_t.c.id.in_(gone)))
    todo = [
        doc
        for ref_id, doc in wanted.items()
        if existing.get(ref_id) is None or any(existing[ref_id][c] != doc[c] for c in _COMPARED)
    ]
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

    for doc in todo:
        holder = holders.get(doc["id"])
        if holder is not None and holder != doc["ref_id"]:
            flush_updates()  # the probe sees the keys the updates before it took
            doc["id"] = _free_key(conn, doc["id"] + 1, doc["ref_id"])
        old = existing.get(doc["ref_id"])
        if old is None:
            inserts.append(doc)
        else:
            updates.append({"old_id": old["id"], **{f"v_{c}": doc[c] for c in _COLUMNS}})
    flush_updates()
    if inserts:
        conn.execute(docs_t.insert(), inserts)
    if not conn.info.get(_BULK):
        backend_for(conn).after_write(conn, todo)
    return len(todo) + len(gone)


def _free_key(conn: Connection, key: int, ref_id: uuid.UUID) -> int:
    # Rank keys end in 50 bits of the document's id; on the rare collision, probe upward.
    while True:
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
) -> int:
    """Re-index some rows now (for writers that bypass the ORM)."""
    names = set(repository_names)
    changes = Changes(
        products=set(products), repos=set(repositories), repo_names=names, product_repos=names
    )
    return apply(session.connection(), changes)


# A reindex of at least this many documents builds their text in worker processes too.
PARALLEL_FROM = 20_000
_PIECES = 16  # a batch's text jobs are shared out in this many pieces


class TextPool:
    """store.search.query.index_texts spread over worker processes, the calling process
    doing a share itself: tokenising and stemming are most of a full reindex's Python
    time, and they need nothing but the texts. Workers are spawned (never forked from a
    process with open connections and threads) and each keeps its own stem cache; as with
    any spawned process, a script that reindexes keeps its top level under
    ``if __name__ == "__main__":`` (the workers import the main module)."""

    def __init__(self, workers: int) -> None:
        # Imported here: serving workers import this module and never reindex.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def texts(self, jobs: Sequence[TextJob]) -> list[str]:
        """The jobs cut in small pieces, all handed to the workers; this process takes
        pieces from the end for as long as no worker has started them, so neither side
        waits long for the other when one gets less of the CPU (a loaded machine)."""
        size = max(1, -(-len(jobs) // _PIECES))
        pieces = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        futures = [self._executor.submit(index_texts, piece) for piece in pieces]
        done: dict[int, list[str]] = {}
        for i in reversed(range(len(pieces))):
            if not futures[i].cancel():
                break  # a worker has it, so every piece before it is a worker's too
            done[i] = index_texts(pieces[i])
        out: list[str] = []
        for i, future in enumerate(futures):
            out += done[i] if i in done else future.result()
        return out

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)


def _workers_for(documents: int) -> int:
    return max(0, (os.cpu_count() or 1) - 1) if documents >= PARALLEL_FROM else 0


def reindex(
    conn: Connection, *, batch: int = 2000, rebuild: bool = True, workers: int | None = None
) -> dict[str, int]:
    """Rebuild every document from the source tables and (``rebuild``) the full-text
    structures from scratch, in one pass: row-by-row index maintenance stops meanwhile
    (SQLite: the triggers; PostgreSQL: search_fts_terms writes) and rebuild() follows, all
    in the caller's transaction. Without ``rebuild``, documents are written (and indexed)
    one by one, like any other change. ``workers``: processes that build the documents'
    text beside this one (default: one per other core, for PARALLEL_FROM documents or
    more; 0: none)."""
    now = utcnow()
    counts = {"store": 0, "hub": 0, "changed": 0}
    backend = backend_for(conn)
    sources: tuple[tuple[str, Any, Callable[..., list[Doc]]], ...] = (
        ("store", Product.__table__, product_documents),
        ("hub", HubRepository.__table__, hub_documents),
    )
    all_ids = [list(conn.scalars(select(table.c.id))) for _, table, _ in sources]
    if workers is None:
        workers = _workers_for(sum(map(len, all_ids)))
    pool = TextPool(workers) if workers > 0 else None
    texts = pool.texts if pool is not None else index_texts
    if rebuild:
        backend.begin_bulk(conn)
        conn.info[_BULK] = True
    try:
        for (source, _table, build), ids in zip(sources, all_ids, strict=True):
            for start in range(0, len(ids), batch):
                chunk = ids[start : start + batch]
                docs = build(conn, chunk, now=now, texts=texts)
                counts["changed"] += write(conn, source, chunk, docs)
                counts[source] += len(docs)
            known = set(ids)
            stale = [
                r.id
                for r in conn.execute(
                    select(docs_t.c.id, docs_t.c.ref_id).where(docs_t.c.source == source)
                )
                if r.ref_id not in known
            ]
            for start in range(0, len(stale), batch):
                conn.execute(delete(docs_t).where(docs_t.c.id.in_(stale[start : start + batch])))
            counts["changed"] += len(stale)
    finally:
        conn.info.pop(_BULK, None)
        if pool is not None:
            pool.close()
    if rebuild:
        backend.rebuild(conn)
    return counts


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
    changes = _collect(session)
    if changes:
        apply(session.connection(), changes)


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
    conn = state.session.connection()
    if state.is_insert:
        result = state.invoke_statement()
        params = state.parameters if isinstance(state.parameters, list) else [state.parameters]
        names = {p.get("name") or p.get("repository") for p in params if isinstance(p, dict)}
        names.discard(None)
        ids = {p.get("id") for p in params if isinstance(p, dict)} - {None}
        if kind == "repos":
            apply(conn, Changes(repos=ids, repo_names=names))  # type: ignore[arg-type]
        elif kind == "products":
            apply(conn, Changes(products=ids, product_repos=names))  # type: ignore[arg-type]
        return result
    bulk_ids = _ids_for(conn, table, getattr(state.statement, "whereclause", None))
    if kind == "orgs" and state.is_delete:
        changes = Changes(deleted_orgs=set(bulk_ids))
    else:
        changes = _changes_for(kind, bulk_ids)
    result = state.invoke_statement()
    if changes:
        apply(conn, changes)
    return result


def install() -> None:
    """Register the listeners on every Session (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    event.listen(Session, "after_flush", _after_flush)
    event.listen(Session, "do_orm_execute", _bulk_statement)
    _INSTALLED = True
