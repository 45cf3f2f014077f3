"""Pull counts reach search by writing the pull columns alone: the documents end up as a
rebuild would make them, the full-text index is touched only when a rank key moves, and
then it follows the new key on both backends."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, event, select, text, update
from sqlalchemy.orm import Session

from store.registry import events, hub
from store.registry.models import HubRepository
from store.search import indexer, service
from store.search.models import SearchDocument
from tests.factories import make_account, make_org, make_product
from tests.search.helpers import make_repo

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _pull(name: str, client: int) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "action": "pull",
        "timestamp": "2026-11-28T12:00:00Z",
        "target": {"repository": name, "mediaType": MANIFEST, "digest": "sha256:" + "a" * 64},
        "request": {"method": "GET", "addr": f"10.0.0.{client}:1", "useragent": "docker"},
    }


def _pulled(session: Session, name: str, times: int) -> set[uuid.UUID]:
    envelope = {"events": [_pull(name, i) for i in range(times)]}
    outcome = events.process(session, envelope, defer_search=True)
    assert outcome.processed == times
    return outcome.pulled


def _docs(session: Session, name: str) -> dict[str, dict[str, Any]]:
    rows = session.execute(select(SearchDocument.__table__).where(SearchDocument.name == name))
    return {r.source: r._asdict() for r in rows}


def _statements(session: Session, work: Any) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
            seen.append(" ".join(sql.split()))

    bind = session.connection().engine
    event.listen(bind, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(bind, "before_cursor_execute", record)
    return seen


def _listing(session: Session) -> None:
    owner = make_account(session, "pullsowner")
    org = make_org(session, owner, "northwind")
    product = make_product(session, org, owner, "pgvault", title="PGVault")
    assert product.repository == "northwind/pgvault"
    make_repo(session, "northwind/pgvault", description="PostgreSQL vault")
    session.flush()


def _set_pulls(session: Session, name: str, count: int) -> set[uuid.UUID]:
    """The repository's total set as many pulls would leave it (a plain UPDATE, as
    hub.count_pull makes: out of the indexer's sight)."""
    hub_t = HubRepository.__table__
    conn = session.connection()
    conn.execute(update(hub_t).where(hub_t.c.name == name).values(pull_count=count))
    return {session.scalar(select(hub_t.c.id).where(hub_t.c.name == name))}


def _refresh(session: Session, pulled: set[uuid.UUID]) -> None:
    """The pull refresh, written now (not at the commit)."""
    hub.refresh_search(session, pulled)
    indexer.write_pending(session)


def _nothing_to_rebuild(session: Session, repositories: Any) -> None:
    indexer.refresh(session, repositories=repositories)
    assert indexer.write_pending(session) == 0


def _kinds(statements: list[str]) -> list[str]:
    """The statements' kinds."""
    return [s.split()[0] for s in statements]


def _after_lock(session: Session, statements: list[str]) -> list[str]:
    """The statements after PostgreSQL's lock of the documents (their listings looked up,
    then one statement locks them all): those SQLite runs too."""
    if session.connection().dialect.name != "postgresql":
        return statements
    assert statements[0].startswith("SELECT products.id"), statements
    assert "FOR UPDATE" in statements[1] and "search_documents" in statements[1], statements
    return statements[2:]


def test_a_pull_refresh_writes_the_pull_columns_and_equals_a_rebuild(session: Session) -> None:
    _listing(session)
    postgresql = session.connection().dialect.name == "postgresql"
    pulled = _pulled(session, "northwind/pgvault", 1)
    _refresh(session, pulled)  # 0 -> 1 pull: the rank key moves
    before = _docs(session, "northwind/pgvault")
    assert {d["pull_count"] for d in before.values()} == {1}

    pulled = _pulled(session, "northwind/pgvault", 40)
    done = _after_lock(session, _statements(session, lambda: _refresh(session, pulled)))
    # One read of both documents' pull columns, a probe of their new rank keys and one
    # UPDATE: no document rebuilt, no indexed column of search_documents written. On
    # PostgreSQL the term rows are rewritten too, as the keys moved to another rank band
    # (with the grams of the vocabulary of common words, read first).
    assert _kinds(done)[:3] == ["SELECT", "SELECT", "UPDATE"], done
    assert "fts_" not in done[2], done
    assert len(done) == (7 if postgresql else 3), done
    after = _docs(session, "northwind/pgvault")
    for source in ("store", "hub"):
        assert after[source]["pull_count"] == 41 and after[source]["pulls_30d"] == 41
        assert after[source]["popularity"] > before[source]["popularity"]
        assert after[source]["id"] != before[source]["id"]  # the rank key followed
        for column in ("fts_body", "fts_facets", "title", "summary", "updated_at"):
            assert after[source][column] == before[source][column]
    # A rebuild of both documents finds nothing to change.
    _nothing_to_rebuild(session, pulled)

    # A busy repository: its popularity moves by one (within its rank band).
    pulled = _set_pulls(session, "northwind/pgvault", 5000)
    _refresh(session, pulled)
    pulled = _set_pulls(session, "northwind/pgvault", 5100)
    done = _after_lock(session, _statements(session, lambda: _refresh(session, pulled)))
    assert _kinds(done) == ["SELECT", "SELECT", "UPDATE"], done
    assert not any("fts_" in s for s in done), done
    _nothing_to_rebuild(session, pulled)

    # One more pull leaves the popularity where it was: the counts, not the key.
    moved = _docs(session, "northwind/pgvault")
    pulled = _pulled(session, "northwind/pgvault", 1)
    done = _after_lock(session, _statements(session, lambda: _refresh(session, pulled)))
    assert _kinds(done) == ["SELECT", "UPDATE"], done
    written = done[1].split(" SET ", 1)[1].split(" WHERE ", 1)[0].split(", ")
    assert "id" not in {w.split("=")[0] for w in written}, done
    again = _docs(session, "northwind/pgvault")
    assert {d["pull_count"] for d in again.values()} == {5101}
    assert {s: d["id"] for s, d in again.items()} == {s: d["id"] for s, d in moved.items()}
    _nothing_to_rebuild(session, pulled)
    # Nothing changed since: a read and no write.
    last = _after_lock(session, _statements(session, lambda: _refresh(session, pulled)))
    assert _kinds(last) == ["SELECT"]


def test_a_moved_document_is_found_in_its_new_place(session: Session) -> None:
    make_repo(session, "acme/alpha", description="widget maker")
    make_repo(session, "acme/beta", description="widget maker")
    session.flush()

    def order() -> list[str]:
        found = service.search(session, q="widget", as_you_type=False)
        return [h.doc.name for h in found.hits]

    assert order() == ["acme/alpha", "acme/beta"] or order() == ["acme/beta", "acme/alpha"]
    first, second = order()
    hub.refresh_search(session, _pulled(session, second, 3))
    assert order() == [second, first]  # the full-text index follows the moved rank key
    hub.refresh_search(session, _pulled(session, first, 9))
    assert order() == [first, second]
    assert service.search(session, q="maker", as_you_type=False).total == 2
    if session.connection().dialect.name == "postgresql":
        # The term rows carry their key's rank band, rewritten when the key changes band.
        from store.search.postgres_fts import band_tokens

        for name in (first, second):
            doc = _docs(session, name)["hub"]
            for table, column in (("search_fts_terms", "tsv"), ("search_fts_fields", "head")):
                stored = session.scalar(
                    text(f"SELECT {column}::text FROM {table} WHERE id = :id"),  # noqa: S608
                    {"id": doc["id"]},
                )
                assert stored is not None
                assert all(f"'{t}'" in stored for t in band_tokens(doc["id"])), stored


def test_missing_documents_are_rebuilt_by_a_pull_refresh(session: Session) -> None:
    _listing(session)
    session.execute(delete(SearchDocument.__table__).where(SearchDocument.source == "store"))
    hub.refresh_search(session, _pulled(session, "northwind/pgvault", 2))
    docs = _docs(session, "northwind/pgvault")
    assert set(docs) == {"store", "hub"}
    assert {d["pull_count"] for d in docs.values()} == {2}
    _nothing_to_rebuild(session, [docs["hub"]["ref_id"]])
