"""accounts: when the account was deleted (its personal data erased, the row kept for orders)

Revision ID: 0410
Revises: 0620
Create Date: 2026-12-03 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0410"
down_revision: str | Sequence[str] | None = "0620"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("deleted_at", store.db.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("deleted_at")
