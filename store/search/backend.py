"""The interface both full-text backends implement, and the choice between them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection

from store.search import facets
from store.search.query import Query

if TYPE_CHECKING:
    from store.search.workers import WorkerPool


@dataclass(frozen=True)
class Scope:
    """What the caller may see: everything (admins), or what is public plus what the
    namespaces they are members of and the products they hold a usable entitlement to
    make visible to them."""

    everything: bool = False
    namespaces: tuple[str, ...] = ()
    products: tuple[uuid.UUID, ...] = ()
    repositories: tuple[uuid.UUID, ...] = ()  # private repositories shared with the caller

    @property
    def tokens(self) -> list[str]:
        """The visibility tokens of restricted documents this caller sees."""
        return (
            [facets.visibility_token(ns) for ns in self.namespaces]
            + [facets.product_token(p) for p in self.products]
            + [facets.repository_token(r) for r in self.repositories]
        )


@dataclass(frozen=True)
class Criteria:
    """A query, its facet filter tokens (ANDed) and the caller's scope."""

    query: Query
    filter_tokens: tuple[str, ...] = ()
    scope: Scope = field(default_factory=Scope)


class SearchBackend(Protocol):
    name: str

    def planning(self, conn: Connection) -> AbstractContextManager[None]:
        """Session settings for the queries of one search (restored afterwards)."""

    def tier_ids(self, conn: Connection, criteria: Criteria, limit: int) -> dict[int, list[int]]:
        """For each field tier 1..3 (query.TIER_FIELDS): the rank keys of the documents
        matching the query in the tier's fields alone, best static rank first, stopping
        after ``limit``. Called after facet_rows, with the same criteria."""

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        """(rank key, facet tokens) of the first ``limit`` matches in static-rank order."""

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        """Bring engine structures the database does not maintain itself in step."""

    def after_move(self, conn: Connection, moves: Sequence[tuple[int, int]]) -> None:
        """These documents' rank keys changed (old, new), nothing else indexed did."""

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten in this transaction, and rebuild() will
        follow: row-by-row maintenance may stop (after_write is not called meanwhile)."""

    def rebuild(self, conn: Connection, pool: WorkerPool | None = None) -> None:
        """Rebuild the full-text structures from search_documents (recovery); ``pool``:
        worker processes that may take a share of the work."""


def backend_for(conn: Connection) -> SearchBackend:
    if conn.dialect.name == "postgresql":
        from store.search.postgres_fts import PostgresBackend

        return PostgresBackend()
    from store.search.sqlite_fts import SqliteBackend

    return SqliteBackend()
