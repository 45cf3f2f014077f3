"""billing_orders.terms, billing_subscriptions.terms: the tier's seats per unit and features
when it was bought (a publisher's later edit of the tier changes new purchases only). NULL on
rows made before: those keep reading the tier, as they did.

Revision ID: 0800
Revises: 0775
Create Date: 2026-12-05 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0800"
down_revision: str | Sequence[str] | None = "0775"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("billing_orders", "billing_subscriptions"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("terms", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("billing_orders", "billing_subscriptions"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("terms")
