"""sale notices: each member's choice per selling organization, and the sales told

Revision ID: 0741
Revises: 0701
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0741"
down_revision: str | Sequence[str] | None = "0701"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = store.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "billing_sale_notice_preferences",
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("since", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_sale_notice_preferences_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_billing_sale_notice_preferences_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "organization_id", name=op.f("pk_billing_sale_notice_preferences")
        ),
    )
    op.create_table(
        "billing_sale_notices",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("digest_day", sa.String(length=10), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_sale_notices_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["billing_orders.id"],
            name=op.f("fk_billing_sale_notices_order_id_billing_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "account_id", name=op.f("pk_billing_sale_notices")),
    )
    op.create_index(
        op.f("ix_billing_sale_notices_account_id"),
        "billing_sale_notices",
        ["account_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_billing_sale_notices_account_id"), table_name="billing_sale_notices")
    op.drop_table("billing_sale_notices")
    op.drop_table("billing_sale_notice_preferences")
