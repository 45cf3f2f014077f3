"""search (PostgreSQL): the vocabulary of the index, so a prefix is asked for as the lexemes
it starts instead of a partial match

search_fts_vocabulary lists every word lexeme and 3-character prefix lexeme ('*:abc') the
tsvectors hold (store.search.postgres_fts, "the vocabulary"); filled here from the index as
it is. SQLite needs nothing.

Revision ID: 0760
Revises: 0750
Create Date: 2026-12-04 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0760"
down_revision: str | Sequence[str] | None = "0750"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute('CREATE TABLE search_fts_vocabulary (lexeme text COLLATE "C" PRIMARY KEY)')
    # Words hold no ':'; facet, visibility and band tokens do, prefix lexemes start '*:'.
    # About 15 s at 200,000 documents.
    op.execute(
        "INSERT INTO search_fts_vocabulary (lexeme) SELECT DISTINCT u.lexeme "
        "FROM search_fts_terms, unnest(tsv) AS u "
        "WHERE strpos(u.lexeme, ':') = 0 OR starts_with(u.lexeme, '*:')"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE search_fts_vocabulary")
