"""PostgreSQL backend: a weighted tsvector column on search_documents with a GIN index.

The tsvector is written from Python as a literal (lexemes, positions, weights) from the
same tokens the SQLite backend indexes, so both backends match exactly the same documents.
Weights: name A, title B, summary C, description D; facet tokens carry no position.
Queries are ``tsv @@ query ORDER BY id LIMIT n``: the planner walks the rank-key index and
stops early for frequent terms, or takes the GIN bitmap for rare ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, text

from store.search import facets
from store.search.backend import Criteria
from store.search.query import tsquery_text, tsquery_tokens

CREATE_STATEMENTS = (
    "ALTER TABLE search_documents ADD COLUMN tsv tsvector NOT NULL DEFAULT ''",
    "CREATE INDEX ix_search_fts_tsv ON search_documents USING gin (tsv) WITH (fastupdate = off)",
)
DROP_STATEMENTS = (
    "DROP INDEX IF EXISTS ix_search_fts_tsv",
    "ALTER TABLE search_documents DROP COLUMN IF EXISTS tsv",
)

# Field → (weight, first position). Gaps keep phrases from spanning two fields.
_FIELDS = (("fts_name", "A", 1), ("fts_title", "B", 101), ("fts_summary", "C", 301))
_BODY = ("fts_body", "D", 1001)
_MAX_POS = 16383


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_literal(doc: dict[str, Any]) -> str:
    positions: dict[str, list[str]] = {}
    for column, weight, start in (*_FIELDS, _BODY):
        for offset, tok in enumerate(doc[column].split()):
            pos = min(start + offset, _MAX_POS)
            positions.setdefault(tok, []).append(f"{pos}{weight}")
    parts = [f"{_quote(t)}:{','.join(p[:256])}" for t, p in positions.items()]
    parts += [_quote(t) for t in doc["fts_facets"].split() if t not in positions]
    return " ".join(parts)


def tsquery(criteria: Criteria, tier: int) -> str:
    parts = []
    words = tsquery_text(criteria.query, tier)
    if words:
        parts.append(words)
    if criteria.filter_tokens:
        parts.append(tsquery_tokens(list(criteria.filter_tokens)))
    scope = criteria.scope
    if scope.everything:
        parts.append(f"!{tsquery_tokens([facets.HIDDEN])}")
    else:
        visible = [facets.PUBLIC] + [facets.visibility_token(ns) for ns in scope.namespaces]
        parts.append(tsquery_tokens(visible, any_of=True))
    if not words and not criteria.filter_tokens:
        parts.insert(0, tsquery_tokens([facets.ALL]))
    return " & ".join(parts)


class PostgresBackend:
    name = "postgresql-tsvector"

    def ranked_ids(self, conn: Connection, criteria: Criteria, tier: int, limit: int) -> list[int]:
        rows = conn.execute(
            text(
                "SELECT id FROM search_documents WHERE tsv @@ CAST(:q AS tsquery) "
                "ORDER BY id LIMIT :n"
            ),
            {"q": tsquery(criteria, tier), "n": limit},
        )
        return list(rows.scalars().all())

    def facet_rows(
        self, conn: Connection, criteria: Criteria, limit: int
    ) -> Sequence[tuple[int, str]]:
        rows = conn.execute(
            text(
                "SELECT id, fts_facets FROM search_documents WHERE tsv @@ CAST(:q AS tsquery) "
                "ORDER BY id LIMIT :n"
            ),
            {"q": tsquery(criteria, 0), "n": limit},
        )
        return [(r[0], r[1]) for r in rows.all()]

    def after_write(self, conn: Connection, docs: Sequence[dict[str, Any]]) -> None:
        if not docs:
            return
        conn.execute(
            text("UPDATE search_documents SET tsv = CAST(:v AS tsvector) WHERE id = :id"),
            [{"id": d["id"], "v": tsvector_literal(d)} for d in docs],
        )

    def rebuild(self, conn: Connection) -> None:
        rows = conn.execute(
            text(
                "SELECT id, fts_name, fts_title, fts_summary, fts_body, fts_facets "
                "FROM search_documents"
            )
        ).mappings()
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(dict(row))
            if len(batch) >= 1000:
                self.after_write(conn, batch)
                batch = []
        self.after_write(conn, batch)
