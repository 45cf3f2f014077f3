"""billing follows access: why a subscription's billing must stop; a dispute's outcome

* billing_subscriptions.end_requested / end_reason / end_requested_at: the store decided
  that billing stops (a refund, a suspended or unpublished product, a lost dispute), kept
  until the gateway agrees so a failed gateway call is retried; canceled_by_customer.
* billing_orders.dispute_status: open, won or lost.

Revision ID: 0220
Revises: 0101
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0220"
down_revision: str | Sequence[str] | None = "0101"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("end_requested", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("end_reason", sa.String(length=32), nullable=True))
        batch.add_column(
            sa.Column("end_requested_at", store.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column(
                "canceled_by_customer", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
    with op.batch_alter_table("billing_orders") as batch:
        batch.add_column(sa.Column("dispute_status", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_orders") as batch:
        batch.drop_column("dispute_status")
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("canceled_by_customer")
        batch.drop_column("end_requested_at")
        batch.drop_column("end_reason")
        batch.drop_column("end_requested")
