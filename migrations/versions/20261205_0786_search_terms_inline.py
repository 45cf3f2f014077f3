"""search (PostgreSQL): the "anywhere" tsvectors kept inline and uncompressed up to 4 KB

With the common grams (migration 0785) 23 % of the rows of search_fts_terms passed the
2 KB TOAST threshold and were stored compressed: a phrase's recheck read them compressed
(1.45 times the buffers of the bench's phrases the grams do not cover, at 200,000 documents).
toast_tuple_target = 4080 keeps rows up to that size in the heap as they are (buffers
0.59 times that, the table 2.33 → 2.28 KB per document: no TOAST pointers and chunks).
Applies to rows written from now on; `store search reindex` rewrites them all (the
rebuild gives its new tables the live table's options). SQLite needs nothing.

Revision ID: 0786
Revises: 0800
Create Date: 2026-12-05 05:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0786"
down_revision: str | Sequence[str] | None = "0800"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE search_fts_terms SET (toast_tuple_target = 4080)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_fts_terms RESET (toast_tuple_target)")
