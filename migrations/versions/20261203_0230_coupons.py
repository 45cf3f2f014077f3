"""billing: publishers' coupons and their redemptions

* billing_coupons: a code for one product (or one tier of it) taking a percentage or an
  amount off, once / for N months / forever, with an optional expiry, a redemption limit
  and a once-per-customer rule.
* billing_coupon_redemptions: each use by a checkout (held, redeemed, released), with a
  partial unique index that allows one live redemption per customer of a coupon.
* billing_orders / billing_subscriptions: the coupon a payment or subscription got;
  subscriptions count their paid charges (the coupon's duration is counted in charges).

Revision ID: 0230
Revises: 0410
Create Date: 2026-12-03 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0230"
down_revision: str | Sequence[str] | None = "0410"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE_REDEMPTION_SQL = "customer_key IS NOT NULL AND status IN ('held', 'redeemed')"


def upgrade() -> None:
    op.create_table(
        "billing_coupons",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("tier_id", sa.Uuid(), nullable=True),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("percent_off", sa.String(length=12), nullable=True),
        sa.Column("amount_off_minor", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("duration", sa.String(length=16), nullable=False),
        sa.Column("duration_months", sa.Integer(), nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("times_redeemed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("once_per_customer", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("expires_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deactivated_at", store.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_billing_coupons_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_billing_coupons_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tier_id"],
            ["tiers.id"],
            name=op.f("fk_billing_coupons_tier_id_tiers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["accounts.id"],
            name=op.f("fk_billing_coupons_created_by_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_coupons")),
        sa.UniqueConstraint("product_id", "code", name=op.f("uq_billing_coupons_product_id")),
    )
    op.create_index(
        op.f("ix_billing_coupons_organization_id"), "billing_coupons", ["organization_id"]
    )
    op.create_table(
        "billing_coupon_redemptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("coupon_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("customer_key", sa.Uuid(), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"],
            ["billing_coupons.id"],
            name=op.f("fk_billing_coupon_redemptions_coupon_id_billing_coupons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_coupon_redemptions_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["billing_orders.id"],
            name=op.f("fk_billing_coupon_redemptions_order_id_billing_orders"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_coupon_redemptions")),
    )
    op.create_index(
        op.f("ix_billing_coupon_redemptions_coupon_id"),
        "billing_coupon_redemptions",
        ["coupon_id"],
    )
    op.create_index(
        op.f("ix_billing_coupon_redemptions_order_id"),
        "billing_coupon_redemptions",
        ["order_id"],
    )
    op.create_index(
        "ux_billing_coupon_redemptions_customer",
        "billing_coupon_redemptions",
        ["coupon_id", "customer_key"],
        unique=True,
        sqlite_where=sa.text(LIVE_REDEMPTION_SQL),
        postgresql_where=sa.text(LIVE_REDEMPTION_SQL),
    )
    with op.batch_alter_table("billing_orders") as batch:
        batch.add_column(sa.Column("coupon_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("coupon_code", sa.String(length=40), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_billing_orders_coupon_id_billing_coupons"),
            "billing_coupons",
            ["coupon_id"],
            ["id"],
            ondelete="SET NULL",
        )
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("coupon_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("coupon_code", sa.String(length=40), nullable=True))
        batch.add_column(
            sa.Column("paid_charges", sa.Integer(), server_default="0", nullable=False)
        )
        batch.create_foreign_key(
            batch.f("fk_billing_subscriptions_coupon_id_billing_coupons"),
            "billing_coupons",
            ["coupon_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_constraint(
            batch.f("fk_billing_subscriptions_coupon_id_billing_coupons"), type_="foreignkey"
        )
        batch.drop_column("paid_charges")
        batch.drop_column("coupon_code")
        batch.drop_column("coupon_id")
    with op.batch_alter_table("billing_orders") as batch:
        batch.drop_constraint(
            batch.f("fk_billing_orders_coupon_id_billing_coupons"), type_="foreignkey"
        )
        batch.drop_column("coupon_code")
        batch.drop_column("coupon_id")
    op.drop_index("ux_billing_coupon_redemptions_customer", table_name="billing_coupon_redemptions")
    op.drop_index(
        op.f("ix_billing_coupon_redemptions_order_id"), table_name="billing_coupon_redemptions"
    )
    op.drop_index(
        op.f("ix_billing_coupon_redemptions_coupon_id"), table_name="billing_coupon_redemptions"
    )
    op.drop_table("billing_coupon_redemptions")
    op.drop_index(op.f("ix_billing_coupons_organization_id"), table_name="billing_coupons")
    op.drop_table("billing_coupons")
