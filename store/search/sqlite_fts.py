"""SQLite FTS5 backend: an external-content FTS5 table over search_documents.

The FTS5 rowid *is* the document's rank key, so ``ORDER BY rowid LIMIT n`` walks the
doclists in rank order and stops after n matches: no bm25, no scoring of every match.
Triggers (created by the migration) keep the index in step inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import fts5_text, fts5_tokens

FTS_COLUMNS = ("fts_name", "fts_title", "fts_summary", "fts_body", "fts_facets")

CREATE_STATEMENTS = (
    """CREATE VIRTUAL TABLE search_fts USING fts5(
        fts_name, fts_title, fts_summary, fts_body, fts_facets,
        content='search_documents', content_rowid='id',
        tokenize="unicode61 remove_diacritics 2 tokenchars ':'",
        prefix='2 3', columnsize=0)""",
    # Facet tokens again, in a narrow table: the facet pass reads them for up to a
    # thousand matches, and narrow rows in rank order share pages.
    "CREATE TABLE search_fts_facets (id INTEGER PRIMARY KEY, tokens TEXT NOT NULL)",
    """CREATE TRIGGER search_fts_insert AFTER INSERT ON search_documents BEGIN
        INSERT INTO search_fts(rowid, fts_name, fts_title, fts_summary, fts_body, fts_facets)
        VALUES (new.id, new.fts_name, new.fts_title, new.fts_summary, new.fts_body,
                new.fts_facets);
        INSERT INTO search_fts_facets(id, tokens) VALUES (new.id, new.fts_facets);
    END""",
    """CREATE TRIGGER search_fts_delete AFTER DELETE ON search_documents BEGIN
        INSERT INTO search_fts(search_fts, rowid, fts_name, fts_title, fts_summary, fts_body,
                               fts_facets)
        VALUES ('delete', old.id, old.fts_name, old.fts_title, old.fts_summary, old.fts_body,
                old.fts_facets);
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
        DELETE FROM search_fts_facets WHERE id = old.id;
        INSERT INTO search_fts_facets(id, tokens) VALUES (new.id, new.fts_facets);
    END""",
)
DROP_STATEMENTS = (
    "DROP TRIGGER IF EXISTS search_fts_update",
    "DROP TRIGGER IF EXISTS search_fts_delete",
    "DROP TRIGGER IF EXISTS search_fts_insert",
    "DROP TABLE IF EXISTS search_fts_facets",
    "DROP TABLE IF EXISTS search_fts",
)


def match_expression(criteria: Criteria, tier: int) -> str:
    parts = []
    words = fts5_text(criteria.query, tier)
    if words:
        parts.append(words)
    if criteria.filter_tokens:
        parts.append(fts5_tokens(list(criteria.filter_tokens)))
    scope = criteria.scope
    if not scope.everything:
        visible = [facets.PUBLIC] + [facets.visibility_token(ns) for ns in scope.namespaces]
        parts.append(fts5_tokens(visible, any_of=True))
    if not parts:
        parts.append(fts5_tokens([facets.ALL]))
    expr = " AND ".join(f"({p})" for p in parts)
    if scope.everything:
        expr = f"({expr}) NOT {fts5_tokens([facets.HIDDEN])}"
    return expr


class SqliteBackend:
    name = "sqlite-fts5"

    def ranked_ids(self, conn: Connection, criteria: Criteria, tier: int, limit: int) -> list[int]:
        rows = conn.execute(
            text("SELECT rowid FROM search_fts WHERE search_fts MATCH :m ORDER BY rowid LIMIT :n"),
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

    def rebuild(self, conn: Connection) -> None:
        conn.execute(text("INSERT INTO search_fts(search_fts) VALUES ('rebuild')"))
        conn.execute(text("DELETE FROM search_fts_facets"))
        conn.execute(
            text(
                "INSERT INTO search_fts_facets(id, tokens) "
                "SELECT id, fts_facets FROM search_documents ORDER BY id"
            )
        )
