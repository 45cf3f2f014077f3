"""billing: at most one open purchase per holder and product

``holder_key`` (the organisation bought for, else the buying account) on orders and
subscriptions, and partial unique indexes on ``(holder_key, product_id)`` over open one-time
orders and open subscriptions (see store.billing.ownership). Existing rows get their holder;
where a holder already has several open purchases of one product (charged twice before this
revision), the oldest keeps the key and the others are left out of the index, so the upgrade
never fails on them; they stay as they are for an operator to refund.

Revision ID: 0201
Revises: 0500
Create Date: 2026-12-02 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0201"
down_revision: str | Sequence[str] | None = "0500"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_ORDER_SQL = (
    "kind = 'one_time' AND holder_key IS NOT NULL AND status IN "
    "('pending', 'requires_action', 'review', 'paid', 'partially_refunded')"
)
OPEN_SUBSCRIPTION_SQL = (
    "holder_key IS NOT NULL AND status IN ('incomplete', 'trialing', 'active', 'past_due')"
)
_TABLES = (
    ("billing_orders", "ux_billing_orders_open_holder", OPEN_ORDER_SQL),
    ("billing_subscriptions", "ux_billing_subscriptions_open_holder", OPEN_SUBSCRIPTION_SQL),
)


def upgrade() -> None:
    for table, index, where in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("holder_key", sa.Uuid(), nullable=True))
        # The table names and conditions are this module's constants.
        op.execute(f"UPDATE {table} SET holder_key = COALESCE(organization_id, account_id)")  # noqa: S608
        other_where = (
            where.replace("holder_key", "o.holder_key")
            .replace("status", "o.status")
            .replace("kind", "o.kind")
        )
        op.execute(
            f"""UPDATE {table} SET holder_key = NULL
                 WHERE {where} AND EXISTS (
                   SELECT 1 FROM {table} o
                    WHERE o.holder_key = {table}.holder_key
                      AND o.product_id = {table}.product_id
                      AND {other_where}
                      AND (o.created_at < {table}.created_at
                           OR (o.created_at = {table}.created_at AND o.id < {table}.id)))"""  # noqa: S608
        )
        op.create_index(
            index,
            table,
            ["holder_key", "product_id"],
            unique=True,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    for table, index, _where in reversed(_TABLES):
        op.drop_index(index, table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("holder_key")
