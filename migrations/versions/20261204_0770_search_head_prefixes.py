"""search (PostgreSQL): the 2-character prefix of every word of names and titles as a
lexeme, so a 2-character prefix (matched in names and titles only) is one lexeme

A 2-character prefix was the word or the 3-character prefix lexemes it starts, the union of
about 25 posting lists of every field in every statement of a search; it now matches words
of names and titles only (both backends; docs/search.md, "Short prefixes") and is asked for
as ('re' | '*:re'). Here every row gets those lexemes, derived from ``head`` (name and
title: its words and their positions, weighted), as store.search.postgres_fts writes them:
in head with the words' weights, in mid and tsv with the same positions unweighted. Lexemes
'*:re' an index written by revision 0006 still holds (from every field) are replaced.
SQLite needs nothing (FTS5's prefix index; the queries restrict the columns).

Revision ID: 0770
Revises: 0751
Create Date: 2026-12-04 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0770"
down_revision: str | Sequence[str] | None = "0751"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = {"head": "search_fts_fields", "mid": "search_fts_fields", "tsv": "search_fts_terms"}


def _without_two(column: str) -> str:
    """The tsvector without 2-character prefix lexemes ('*:re' is 4 characters long)."""
    return (
        f"ts_delete({column}, ARRAY(SELECT u.lexeme FROM unnest({column}) AS u "  # noqa: S608
        "WHERE starts_with(u.lexeme, '*:') AND length(u.lexeme) = 4))"
    )


def _has_two(column: str) -> str:
    return (
        f"EXISTS (SELECT FROM unnest({column}) AS u "
        "WHERE starts_with(u.lexeme, '*:') AND length(u.lexeme) = 4)"
    )


def _indexes() -> list[tuple[str, str]]:
    return [
        (r.indexname, r.indexdef)
        for r in op.get_bind().execute(
            sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname IN ('ix_search_fts_head', 'ix_search_fts_mid', 'ix_search_fts_tsv')"
            )
        )
    ]


def _rewrite(add: bool) -> None:
    # Every row is rewritten: the GIN indexes are built again once instead of updated row by
    # row (fastupdate = off), as a full reindex builds them.
    indexes = _indexes()
    for name, _ in indexes:
        op.execute(f"DROP INDEX {name}")
    for column, table in _COLUMNS.items():
        op.execute(
            f"UPDATE {table} SET {column} = {_without_two(column)} WHERE {_has_two(column)}"  # noqa: S608
        )
    if add:
        # Per document, each 2-character prefix of its name and title words, quoted for a
        # tsvector literal, with their positions in order (the first 256, as PostgreSQL keeps).
        op.execute(
            "CREATE TEMPORARY TABLE search_head_prefixes ON COMMIT DROP AS "
            "SELECT id, string_agg(lexeme || ':' || weighted, ' ') AS weighted, "
            "string_agg(lexeme || ':' || plain, ' ') AS plain FROM ("
            "SELECT f.id, '''' || replace(replace('*:' || left(u.lexeme, 2), '\\', '\\\\'), "
            "'''', '''''') || '''' AS lexeme, "
            "array_to_string((array_agg(p.pos || p.w ORDER BY p.pos))[1:256], ',') AS weighted, "
            "array_to_string((array_agg(p.pos ORDER BY p.pos))[1:256], ',') AS plain "
            "FROM search_fts_fields AS f, unnest(f.head) AS u, "
            "unnest(u.positions, u.weights) AS p(pos, w) "
            "WHERE strpos(u.lexeme, ':') = 0 AND length(u.lexeme) >= 2 "
            "GROUP BY f.id, 2) AS g GROUP BY id"
        )
        op.execute(
            "UPDATE search_fts_fields AS f "
            "SET head = CAST(CAST(f.head AS text) || ' ' || p.weighted AS tsvector), "
            "mid = CAST(CAST(f.mid AS text) || ' ' || p.plain AS tsvector) "
            "FROM search_head_prefixes AS p WHERE p.id = f.id"
        )
        op.execute(
            "UPDATE search_fts_terms AS t "
            "SET tsv = CAST(CAST(t.tsv AS text) || ' ' || p.plain AS tsvector) "
            "FROM search_head_prefixes AS p WHERE p.id = t.id"
        )
    for _, definition in indexes:
        op.execute(definition)
    op.execute("ANALYZE search_fts_fields, search_fts_terms")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rewrite(add=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rewrite(add=False)
