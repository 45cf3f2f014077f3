"""Helpers for search tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from store.registry.models import HubRepository
from store.search.models import SearchDocument


def make_repo(session: Session, name: str, **fields: Any) -> HubRepository:
    """A hub repository; public (marked so by its owner) unless ``private=True``."""
    private = fields.pop("private", False)
    repo = HubRepository(
        name=name,
        namespace=name.split("/", 1)[0],
        description=fields.pop("description", ""),
        private=private,
        visibility="private" if private else "public",
        pull_count=fields.pop("pull_count", 0),
        star_count=fields.pop("star_count", 0),
        **fields,
    )
    session.add(repo)
    session.flush()
    return repo


def stored_index(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored value of the search index as the database holds it (the documents'
    columns but indexed_at; on PostgreSQL the tsvectors as text too), in rank-key order."""
    columns = ", ".join(c.name for c in SearchDocument.__table__.columns if c.name != "indexed_at")
    queries = {"documents": f"SELECT {columns} FROM search_documents"}  # noqa: S608
    if conn.dialect.name == "postgresql":
        queries["terms"] = "SELECT id, CAST(tags AS text), CAST(tsv AS text) FROM search_fts_terms"
        queries["fields"] = (
            "SELECT id, CAST(head AS text), CAST(mid AS text) FROM search_fts_fields"
        )
    return {
        name: sorted((tuple(r) for r in conn.execute(text(sql))), key=lambda r: r[0])
        for name, sql in queries.items()
    }
