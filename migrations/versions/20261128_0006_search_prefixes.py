"""search: short word prefixes indexed as lexemes; the PostgreSQL tsvectors in two tables

PostgreSQL only (SQLite needs nothing: FTS5 has its prefix='2 3' index).

* A short prefix in a tsquery ('re':*) expands inside the GIN index to every lexeme it
  starts; queries now ask for the lexeme '*:re' instead, which every word tsvector carries
  from this revision on (the 2- and 3-character prefixes of each word, with the word's
  positions and weights, so phrases ending in a prefix still work).
* With those lexemes a row holding all four tsvectors passed the 2 KB TOAST threshold, so
  search_fts_terms keeps (tags, tsv) and search_fts_fields holds (head, mid).
* Statistics target 1000 on the key and the word tsvectors (the search sizes its rank-band
  ranges from them).

Both tables are derived data: they are rebuilt from search_documents.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 22:30:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of store.search.postgres_fts (DDL and tsvector_literals) at this revision
# and, for the downgrade, at revision 0003: a migration must not follow later changes of
# the application code.
_TABLE = """CREATE TABLE {name} (
    id bigint PRIMARY KEY
        REFERENCES search_documents (id) ON DELETE CASCADE ON UPDATE CASCADE,
    {columns}
)"""
_UP_TABLES = {"search_fts_terms": ("tags", "tsv"), "search_fts_fields": ("head", "mid")}
_DOWN_TABLES = {"search_fts_terms": ("tags", "head", "mid", "tsv")}

_NAME, _TITLE = ("fts_name", "A", 1), ("fts_title", "B", 101)
_SUMMARY, _BODY = ("fts_summary", "C", 301), ("fts_body", "D", 1001)
_MAX_POS = 16383
_BAND_SHIFT = 54
_BAND_LEVELS = ((64, "rc"), (8, "rb"), (1, "r"))
_PREFIX_MARK = "*:"


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _literal(
    doc: dict[str, Any], fields: Sequence[tuple[str, str, int]], weighted: bool, prefixes: bool
) -> str:
    positions: dict[str, list[str]] = {}
    for column, weight, start in fields:
        w = weight if weighted else ""
        for offset, tok in enumerate(doc[column].split()):
            position = f"{min(start + offset, _MAX_POS)}{w}"
            positions.setdefault(tok, []).append(position)
            for n in (2, 3) if prefixes else ():
                if len(tok) >= n:
                    positions.setdefault(_PREFIX_MARK + tok[:n], []).append(position)
    parts = [f"{_quote(t)}:{','.join(p[:256])}" for t, p in positions.items()]
    parts += [_quote(t) for t in doc["fts_facets"].split() if t not in positions]
    return " ".join(parts)


def _literals(doc: dict[str, Any], prefixes: bool) -> dict[str, Any]:
    band = doc["id"] >> _BAND_SHIFT
    bands = "".join(f" '{p}:{band // size}'" for size, p in _BAND_LEVELS)
    return {
        "id": doc["id"],
        "tags": " ".join(_quote(t) for t in doc["fts_facets"].split()),
        "head": _literal(doc, (_NAME, _TITLE), True, prefixes) + bands,
        "mid": _literal(doc, (_NAME, _TITLE, _SUMMARY), False, prefixes) + bands,
        "tsv": _literal(doc, (_NAME, _TITLE, _SUMMARY, _BODY), False, prefixes) + bands,
    }


def _build(tables: dict[str, tuple[str, ...]], prefixes: bool) -> None:
    """Drop the full-text tables and build ``tables`` from search_documents: rows written in
    rank-key order, then the GIN indexes built once."""
    conn = op.get_bind()
    op.execute("DROP TABLE IF EXISTS search_fts_fields")
    op.execute("DROP TABLE IF EXISTS search_fts_terms")
    inserts = []
    for name, columns in tables.items():
        definitions = ",\n    ".join(f"{c} tsvector NOT NULL" for c in columns)
        op.execute(_TABLE.format(name=name, columns=definitions))
        values = ", ".join(f"CAST(:{c} AS tsvector)" for c in columns)
        inserts.append(
            sa.text(f"INSERT INTO {name} (id, {', '.join(columns)}) VALUES (:id, {values})")  # noqa: S608
        )
    select = sa.text(
        "SELECT id, fts_name, fts_title, fts_summary, fts_body, fts_facets "
        "FROM search_documents WHERE id > :last ORDER BY id LIMIT 2000"
    )
    last = -(1 << 63)
    while True:
        docs = [dict(r) for r in conn.execute(select, {"last": last}).mappings()]
        if not docs:
            break
        rows = [_literals(d, prefixes) for d in docs]
        for insert in inserts:
            conn.execute(insert, rows)
        last = docs[-1]["id"]
    for name, columns in tables.items():
        for column in columns:
            op.execute(
                f"CREATE INDEX ix_search_fts_{column} ON {name} "
                f"USING gin ({column}) WITH (fastupdate = off)"
            )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _build(_UP_TABLES, prefixes=True)
        # Finer statistics: band sizes come from the key histogram, expected densities from
        # the most common lexemes (the search reads both from pg_stats). With the default
        # 100, the least listed share was 1.75 %, above most words; with 1000 about 1 %.
        # ANALYZE takes ≈ 4 s at 200k documents.
        op.execute(
            "ALTER TABLE search_fts_terms ALTER COLUMN id SET STATISTICS 1000, "
            "ALTER COLUMN tsv SET STATISTICS 1000"
        )
        op.execute(
            "ALTER TABLE search_fts_fields ALTER COLUMN head SET STATISTICS 1000, "
            "ALTER COLUMN mid SET STATISTICS 1000"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _build(_DOWN_TABLES, prefixes=False)
