"""search: the columns other sort orders read (pulls of the last 30 days, last update)

Existing documents get 0 and no date until they are next written; `store search reindex`
fills them (and indexes the word stems and mixed-case parts the documents now carry).

Revision ID: 0500
Revises: 0401
Create Date: 2026-12-02 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0500"
down_revision: str | Sequence[str] | None = "0401"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy on SQLite): the FTS5 tables and triggers read
    # search_documents by column name and stay as they are.
    op.add_column(
        "search_documents",
        sa.Column("pulls_30d", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column(
        "search_documents",
        sa.Column("updated_at", store.db.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("search_documents", "updated_at")
    op.drop_column("search_documents", "pulls_30d")
