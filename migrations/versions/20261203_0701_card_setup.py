"""billing: a card replacement waiting for the bank's confirmation (3-D Secure)

* billing_subscriptions.pending_setup_ref: the gateway's SetupIntent of a new card that
  needs the customer's authentication; the card becomes the subscription's once confirmed.

Revision ID: 0701
Revises: 0700
Create Date: 2026-12-03 13:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0701"
down_revision: str | Sequence[str] | None = "0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("pending_setup_ref", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("pending_setup_ref")
