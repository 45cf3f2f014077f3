"""receipts numbered per seller; the service period of subscription payments

* billing_receipt_sequences: each selling organisation's last receipt number.
* billing_orders.receipt_number widened to 96 (the seller's slug and a sequence number);
  period_start / period_end: the service period an invoice paid for.

Receipts issued before this revision keep their numbers.

Revision ID: 0222
Revises: 0402
Create Date: 2026-12-02 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0222"
down_revision: str | Sequence[str] | None = "0402"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_receipt_sequences",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_billing_receipt_sequences_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_billing_receipt_sequences")),
    )
    with op.batch_alter_table("billing_orders") as batch:
        batch.alter_column(
            "receipt_number",
            existing_type=sa.String(length=32),
            type_=sa.String(length=96),
            existing_nullable=True,
        )
        batch.add_column(
            sa.Column("period_start", store.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("period_end", store.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_orders") as batch:
        batch.drop_column("period_end")
        batch.drop_column("period_start")
        batch.alter_column(
            "receipt_number",
            existing_type=sa.String(length=96),
            type_=sa.String(length=32),
            existing_nullable=True,
        )
    op.drop_table("billing_receipt_sequences")
