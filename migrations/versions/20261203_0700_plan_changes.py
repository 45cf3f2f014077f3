"""billing: plan changes with proration

* billing_plan_changes: a subscription's change to another tier of its product, with the
  prorated amounts (credit, charge, due now, carried), an idempotency key per subscription
  and a partial unique index allowing one pending change per subscription.
* billing_subscriptions: when the current period began, and the credit carried to the next
  invoices by a change to a cheaper plan.

Revision ID: 0700
Revises: 0740
Create Date: 2026-12-03 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0700"
down_revision: str | Sequence[str] | None = "0740"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_CHANGE_SQL = "status = 'pending'"


def upgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(
            sa.Column("current_period_start", store.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("credit_net_minor", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("credit_tax_minor", sa.Integer(), server_default="0", nullable=False)
        )
    op.create_table(
        "billing_plan_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subscription_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("from_tier_id", sa.Uuid(), nullable=False),
        sa.Column("to_tier_id", sa.Uuid(), nullable=False),
        sa.Column("to_price_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_net_minor", sa.Integer(), nullable=False),
        sa.Column("credit_tax_minor", sa.Integer(), nullable=False),
        sa.Column("charge_net_minor", sa.Integer(), nullable=False),
        sa.Column("charge_tax_minor", sa.Integer(), nullable=False),
        sa.Column("due_net_minor", sa.Integer(), nullable=False),
        sa.Column("due_tax_minor", sa.Integer(), nullable=False),
        sa.Column("carried_net_minor", sa.Integer(), nullable=False),
        sa.Column("carried_tax_minor", sa.Integer(), nullable=False),
        sa.Column("interval_change", sa.Boolean(), nullable=False),
        sa.Column("changed_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("period_end", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=False),
        sa.Column("replaced_gateway_ref", sa.String(length=255), nullable=True),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["billing_subscriptions.id"],
            name=op.f("fk_billing_plan_changes_subscription_id_billing_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_plan_changes_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["from_tier_id"],
            ["tiers.id"],
            name=op.f("fk_billing_plan_changes_from_tier_id_tiers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_tier_id"],
            ["tiers.id"],
            name=op.f("fk_billing_plan_changes_to_tier_id_tiers"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_price_id"],
            ["billing_tier_prices.id"],
            name=op.f("fk_billing_plan_changes_to_price_id_billing_tier_prices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["billing_orders.id"],
            name=op.f("fk_billing_plan_changes_order_id_billing_orders"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_plan_changes")),
        sa.UniqueConstraint(
            "subscription_id", "key", name=op.f("uq_billing_plan_changes_subscription_id")
        ),
    )
    op.create_index(
        op.f("ix_billing_plan_changes_subscription_id"),
        "billing_plan_changes",
        ["subscription_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_billing_plan_changes_replaced_gateway_ref"),
        "billing_plan_changes",
        ["replaced_gateway_ref"],
        unique=False,
    )
    op.create_index(
        "ux_billing_plan_changes_pending",
        "billing_plan_changes",
        ["subscription_id"],
        unique=True,
        sqlite_where=sa.text(PENDING_CHANGE_SQL),
        postgresql_where=sa.text(PENDING_CHANGE_SQL),
    )


def downgrade() -> None:
    op.drop_index("ux_billing_plan_changes_pending", table_name="billing_plan_changes")
    op.drop_index(
        op.f("ix_billing_plan_changes_replaced_gateway_ref"), table_name="billing_plan_changes"
    )
    op.drop_index(
        op.f("ix_billing_plan_changes_subscription_id"), table_name="billing_plan_changes"
    )
    op.drop_table("billing_plan_changes")
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("credit_tax_minor")
        batch.drop_column("credit_net_minor")
        batch.drop_column("current_period_start")
