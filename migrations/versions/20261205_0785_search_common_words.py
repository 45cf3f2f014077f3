"""search (PostgreSQL): the vocabulary of common words, whose adjacent pairs the "anywhere"
tsvector holds as lexemes (common grams)

search_fts_common lists the words and 3-character prefix lexemes ('*:abc') that were in at
least 5 % of the documents when a full reindex ran (store.search.postgres_fts, "common
words"). Empty here: the index as it is holds no grams, and a search asks for the grams of
listed words only, so phrases are checked as before until `store search reindex` lists the
common words and writes their grams. SQLite needs nothing.

Revision ID: 0785
Revises: 0790
Create Date: 2026-12-05 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0785"
down_revision: str | Sequence[str] | None = "0790"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute('CREATE TABLE search_fts_common (lexeme text COLLATE "C" PRIMARY KEY)')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE search_fts_common")
