"""SQLite FTS5 backend: two external-content FTS5 tables over search_documents.

The FTS5 rowid *is* the document's rank key, so ``ORDER BY rowid LIMIT n`` walks the
doclists in rank order and stops after n matches: no bm25, no scoring of every match.

* ``search_fts`` indexes every field (name, title, summary, description) and the facet
  tokens: the "anywhere" and "summary" tiers, the facet pass.
* ``search_fts_head`` indexes only name, title and the facet tokens: the "name" and
  "name+title" tiers. A column filter on the big table would walk the word's doclist from
  every description until enough matches *in names* turn up (all of it for a word common in
  descriptions but absent from names); the head table's doclists hold only name/title hits.
* ``search_fts_facets`` holds the facet tokens again in a narrow rowid table: the facet pass
  reads them for up to 501 matches, and narrow rows in rank order share pages.

Triggers (created by the migration, the one definition of these tables) keep all three in
step inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import fts5_excluded, fts5_text, fts5_tokens

if TYPE_CHECKING:
    from store.search.workers import WorkerPool

# The FTS5 tables and their triggers are the migrations' (0003): the triggers are read back
# from the database when they must be dropped for a bulk rewrite and made again after it.
_TRIGGERS = ("search_fts_insert", "search_fts_delete", "search_fts_update")
_TRIGGER_DDL = text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name IN "
    "('search_fts_insert', 'search_fts_delete', 'search_fts_update') ORDER BY name"
)
_SAVED_TRIGGERS = "store.search.sqlite_fts.triggers"


def _trigger_ddl(conn: Connection) -> list[str]:
    return [str(row.sql) for row in conn.execute(_TRIGGER_DDL)]


def _drop_triggers(conn: Connection) -> list[str]:
    """Drop the maintenance triggers; their DDL, to make them again in this transaction."""
    ddl = conn.info.pop(_SAVED_TRIGGERS, None)
    if ddl is None:
        ddl = _trigger_ddl(conn)
    for name in _TRIGGERS:
        conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
    return list(ddl)


_HEAD_TIERS = (2, 3)


def match_expression(criteria: Criteria, tier: int, *, head: bool = False) -> str:
    """The MATCH expression of a tier's query (``head``: for search_fts_head, whose
    columns cannot evaluate exclusions; those are applied against search_fts)."""
    parts = []
    words = fts5_text(criteria.query, tier, excluded=not head)
    if words:
        parts.append(words)
    if criteria.filter_tokens:
        parts.append(fts5_tokens(list(criteria.filter_tokens)))
    if not parts:
        parts.append(fts5_tokens([facets.ALL]))
    expr = " AND ".join(f"({p})" for p in parts)
    scope = criteria.scope
    if scope.everything:
        return f"({expr}) NOT {fts5_tokens([facets.HIDDEN])}"
    restricted = f'"{facets.RESTRICTED}"'
    if scope.tokens:
        mine = " OR ".join(f'"{token}"' for token in scope.tokens)
        restricted = f"({restricted} NOT ({mine}))"
    return f"({expr}) NOT (fts_facets : {restricted})"


class SqliteBackend:
    name = "sqlite-fts5"

    def planning(self, conn: Connection) -> AbstractContextManager[None]:
        return nullcontext()

    def tier_ids(self, conn: Connection, criteria: Criteria, limit: int) -> dict[int, list[int]]:
        return {tier: self._tier_ids(conn, criteria, tier, limit) for tier in (3, 2, 1)}

    def _tier_ids(self, conn: Connection, criteria: Criteria, tier: int, limit: int) -> list[int]:
        if tier in _HEAD_TIERS:
            params: dict[str, Any] = {"m": match_expression(criteria, tier, head=True), "n": limit}
            sql = "SELECT rowid FROM search_fts_head WHERE search_fts_head MATCH :m"
            if criteria.query.excluded:
                sql += " AND rowid NOT IN (SELECT rowid FROM search_fts WHERE search_fts MATCH :x)"
                params["x"] = fts5_excluded(criteria.query)
            rows = conn.execute(text(sql + " ORDER BY rowid LIMIT :n"), params)
        else:
            rows = conn.execute(
                text(
                    "SELECT rowid FROM search_fts WHERE search_fts MATCH :m ORDER BY rowid LIMIT :n"
                ),
                {"m": match_expression(criteria, tier), "n": limit},
            )
        return [r[0] for r in rows]

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        # Facet tokens come from the narrow side table: the FTS5 content lookup would read
        # every indexed column (descriptions included) of each match.
        rows = conn.execute(
            text(
                "SELECT f.id, f.tokens FROM search_fts JOIN search_fts_facets AS f "
                "ON f.id = search_fts.rowid WHERE search_fts MATCH :m "
                "ORDER BY search_fts.rowid LIMIT :n"
            ),
            {"m": match_expression(criteria, 0), "n": limit},
        )
        return [(r[0], r[1]) for r in rows.all()]

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        return None  # the triggers did it

    def after_move(self, conn: Connection, moves: Sequence[tuple[int, int]]) -> None:
        return None  # the update trigger re-filed the rows under their new rowids

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten and rebuild() will follow: stop the
        row-by-row maintenance (the triggers) until then (same transaction)."""
        conn.info[_SAVED_TRIGGERS] = _drop_triggers(conn)

    def rebuild(self, conn: Connection, pool: WorkerPool | None = None) -> None:
        # FTS5 builds both indexes in C in this process: nothing for the workers.
        for statement in _drop_triggers(conn):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO search_fts(search_fts) VALUES ('rebuild')"))
        conn.execute(text("INSERT INTO search_fts_head(search_fts_head) VALUES ('rebuild')"))
        conn.execute(text("DELETE FROM search_fts_facets"))
        conn.execute(
            text(
                "INSERT INTO search_fts_facets(id, tokens) "
                "SELECT id, fts_facets FROM search_documents ORDER BY id"
            )
        )
