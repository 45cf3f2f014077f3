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

Triggers (created by the migration) keep all three in step inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import fts5_excluded, fts5_text, fts5_tokens

_TOKENIZE = "tokenize=\"unicode61 remove_diacritics 2 tokenchars ':'\""

CREATE_STATEMENTS = (
    f"""CREATE VIRTUAL TABLE search_fts USING fts5(
        fts_name, fts_title, fts_summary, fts_body, fts_facets,
        content='search_documents', content_rowid='id', {_TOKENIZE},
        prefix='2 3', columnsize=0)""",
    f"""CREATE VIRTUAL TABLE search_fts_head USING fts5(
        fts_name, fts_title, fts_facets,
        content='search_documents', content_rowid='id', {_TOKENIZE},
        prefix='2 3', columnsize=0)""",
    "CREATE TABLE search_fts_facets (id INTEGER PRIMARY KEY, tokens TEXT NOT NULL)",
    """CREATE TRIGGER search_fts_insert AFTER INSERT ON search_documents BEGIN
        INSERT INTO search_fts(rowid, fts_name, fts_title, fts_summary, fts_body, fts_facets)
        VALUES (new.id, new.fts_name, new.fts_title, new.fts_summary, new.fts_body,
                new.fts_facets);
        INSERT INTO search_fts_head(rowid, fts_name, fts_title, fts_facets)
        VALUES (new.id, new.fts_name, new.fts_title, new.fts_facets);
        INSERT INTO search_fts_facets(id, tokens) VALUES (new.id, new.fts_facets);
    END""",
    """CREATE TRIGGER search_fts_delete AFTER DELETE ON search_documents BEGIN
        INSERT INTO search_fts(search_fts, rowid, fts_name, fts_title, fts_summary, fts_body,
                               fts_facets)
        VALUES ('delete', old.id, old.fts_name, old.fts_title, old.fts_summary, old.fts_body,
                old.fts_facets);
        INSERT INTO search_fts_head(search_fts_head, rowid, fts_name, fts_title, fts_facets)
        VALUES ('delete', old.id, old.fts_name, old.fts_title, old.fts_facets);
        DELETE FROM search_fts_facets WHERE id = old.id;
    END""",
    """CREATE TRIGGER search_fts_update
    AFTER UPDATE OF id, fts_name, fts_title, fts_summary, fts_body, fts_facets
    ON search_documents BEGIN
        INSERT INTO search_fts(search_fts, rowid, fts_name, fts_title, fts_summary, fts_body,
                               fts_facets)
        VALUES ('delete', old.id, old.fts_name, old.fts_title, old.fts_summary, old.fts_body,
                old.fts_facets);
        INSERT INTO search_fts(rowid, fts_name, fts_title, fts_summary, fts_body, fts_facets)
        VALUES (new.id, new.fts_name, new.fts_title, new.fts_summary, new.fts_body,
                new.fts_facets);
        INSERT INTO search_fts_head(search_fts_head, rowid, fts_name, fts_title, fts_facets)
        VALUES ('delete', old.id, old.fts_name, old.fts_title, old.fts_facets);
        INSERT INTO search_fts_head(rowid, fts_name, fts_title, fts_facets)
        VALUES (new.id, new.fts_name, new.fts_title, new.fts_facets);
        DELETE FROM search_fts_facets WHERE id = old.id;
        INSERT INTO search_fts_facets(id, tokens) VALUES (new.id, new.fts_facets);
    END""",
)
DROP_STATEMENTS = (
    "DROP TRIGGER IF EXISTS search_fts_update",
    "DROP TRIGGER IF EXISTS search_fts_delete",
    "DROP TRIGGER IF EXISTS search_fts_insert",
    "DROP TABLE IF EXISTS search_fts_facets",
    "DROP TABLE IF EXISTS search_fts_head",
    "DROP TABLE IF EXISTS search_fts",
)

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

    def begin_bulk(self, conn: Connection) -> None:
        """Many documents are about to be rewritten and rebuild() will follow: stop the
        row-by-row maintenance (the triggers) until then (same transaction)."""
        for statement in DROP_STATEMENTS[:3]:
            conn.execute(text(statement))

    def rebuild(self, conn: Connection) -> None:
        for statement in DROP_STATEMENTS[:3]:
            conn.execute(text(statement))
        for statement in CREATE_STATEMENTS[3:]:
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
