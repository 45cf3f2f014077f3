"""search: search_documents and the full-text index (FTS5 on SQLite, tsvectors+GIN on PG)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the engine DDL (store.search.sqlite_fts / postgres_fts at this revision).
SQLITE_CREATE = (
    """CREATE VIRTUAL TABLE search_fts USING fts5(
        fts_name, fts_title, fts_summary, fts_body, fts_facets,
        content='search_documents', content_rowid='id',
        tokenize="unicode61 remove_diacritics 2 tokenchars ':'",
        prefix='2 3', columnsize=0)""",
    """CREATE VIRTUAL TABLE search_fts_head USING fts5(
        fts_name, fts_title, fts_facets,
        content='search_documents', content_rowid='id',
        tokenize="unicode61 remove_diacritics 2 tokenchars ':'",
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
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS search_fts_update",
    "DROP TRIGGER IF EXISTS search_fts_delete",
    "DROP TRIGGER IF EXISTS search_fts_insert",
    "DROP TABLE IF EXISTS search_fts_facets",
    "DROP TABLE IF EXISTS search_fts_head",
    "DROP TABLE IF EXISTS search_fts",
)
PG_CREATE = (
    """CREATE TABLE search_fts_terms (
        id bigint PRIMARY KEY
            REFERENCES search_documents (id) ON DELETE CASCADE ON UPDATE CASCADE,
        tags tsvector NOT NULL,
        head tsvector NOT NULL,
        mid tsvector NOT NULL,
        tsv tsvector NOT NULL
    )""",
    "CREATE INDEX ix_search_fts_tags ON search_fts_terms USING gin (tags) WITH (fastupdate = off)",
    "CREATE INDEX ix_search_fts_head ON search_fts_terms USING gin (head) WITH (fastupdate = off)",
    "CREATE INDEX ix_search_fts_mid ON search_fts_terms USING gin (mid) WITH (fastupdate = off)",
    "CREATE INDEX ix_search_fts_tsv ON search_fts_terms USING gin (tsv) WITH (fastupdate = off)",
)
PG_DROP = ("DROP TABLE IF EXISTS search_fts_terms",)


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("ref_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("name_key", sa.String(length=255), nullable=False),
        sa.Column("namespace", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("summary", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("publisher", sa.String(length=64), nullable=False),
        sa.Column("publisher_name", sa.String(length=120), nullable=False),
        sa.Column("official", sa.Boolean(), nullable=False),
        sa.Column("certified", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("pricing", store.db.StringList(), nullable=False),
        sa.Column("price_min", sa.BigInteger(), nullable=True),
        sa.Column("price_max", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("categories", store.db.StringList(), nullable=False),
        sa.Column("platforms", store.db.StringList(), nullable=False),
        sa.Column("pull_count", sa.BigInteger(), nullable=False),
        sa.Column("star_count", sa.Integer(), nullable=False),
        sa.Column("popularity", sa.Integer(), nullable=False),
        sa.Column("fts_name", sa.Text(), nullable=False),
        sa.Column("fts_title", sa.Text(), nullable=False),
        sa.Column("fts_summary", sa.Text(), nullable=False),
        sa.Column("fts_body", sa.Text(), nullable=False),
        sa.Column("fts_facets", sa.Text(), nullable=False),
        sa.Column("indexed_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint("source", "ref_id", name=op.f("uq_search_documents_source")),
    )
    with op.batch_alter_table("search_documents", schema=None) as batch_op:
        batch_op.create_index("ix_search_documents_name", ["name"], unique=False)
        batch_op.create_index("ix_search_documents_name_key", ["name_key"], unique=False)
        batch_op.create_index("ix_search_documents_owner_id", ["owner_id"], unique=False)
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_CREATE if dialect == "sqlite" else PG_CREATE:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_DROP if dialect == "sqlite" else PG_DROP:
        op.execute(statement)
    op.drop_table("search_documents")
