"""billing_subscriptions.gateway_quantity: the item quantity the gateway's subscription has
(seats changed in Stripe's dashboard are read back; a subscription's seats are the lesser of
this and the quantity last paid for). NULL: never read, the paid quantity holds.

Revision ID: 0775
Revises: 0785
Create Date: 2026-12-05 04:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0775"
down_revision: str | Sequence[str] | None = "0785"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("gateway_quantity", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("gateway_quantity")
