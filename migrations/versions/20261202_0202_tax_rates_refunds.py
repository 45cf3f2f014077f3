"""billing: the gateway's tax rates, and refunds booked when they happen

``billing_gateway_tax_rates``: the Stripe TaxRate made for each rate and label the store
charges (exclusive), made once and reused. ``billing_refunds``: one row per refund step, with
its net and tax parts and the time it happened, so the sales report books refunds in the month
they were made. Existing refunded orders get one row at their ``refunded_at``.

Revision ID: 0202
Revises: 0140
Create Date: 2026-12-02 21:35:00
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0202"
down_revision: str | Sequence[str] | None = "0140"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_gateway_tax_rates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("gateway", sa.String(length=16), nullable=False),
        sa.Column("rate", sa.String(length=12), nullable=False),
        sa.Column("label", sa.String(length=50), nullable=False),
        sa.Column("gateway_ref", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_gateway_tax_rates")),
        sa.UniqueConstraint(
            "gateway", "rate", "label", name=op.f("uq_billing_gateway_tax_rates_gateway")
        ),
    )
    op.create_table(
        "billing_refunds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("amount_minor", sa.Integer(), nullable=False),
        sa.Column("tax_minor", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["billing_orders.id"],
            name=op.f("fk_billing_refunds_order_id_billing_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_refunds")),
    )
    op.create_index(
        op.f("ix_billing_refunds_order_id"), "billing_refunds", ["order_id"], unique=False
    )
    op.create_index(
        op.f("ix_billing_refunds_created_at"), "billing_refunds", ["created_at"], unique=False
    )
    orders = sa.table(
        "billing_orders",
        sa.column("id", sa.Uuid()),
        sa.column("amount_minor", sa.Integer()),
        sa.column("tax_minor", sa.Integer()),
        sa.column("refunded_minor", sa.Integer()),
        sa.column("refunded_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    refunds = sa.table(
        "billing_refunds",
        sa.column("id", sa.Uuid()),
        sa.column("order_id", sa.Uuid()),
        sa.column("amount_minor", sa.Integer()),
        sa.column("tax_minor", sa.Integer()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(orders).where(orders.c.refunded_minor > 0)).all()
    for row in rows:
        total = row.amount_minor + row.tax_minor
        tax = (row.refunded_minor * row.tax_minor * 2 + total) // (2 * total) if total else 0
        bind.execute(
            refunds.insert().values(
                id=uuid.uuid4(),
                order_id=row.id,
                amount_minor=row.refunded_minor,
                tax_minor=min(tax, row.tax_minor),
                created_at=row.refunded_at or row.updated_at,
            )
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_billing_refunds_created_at"), table_name="billing_refunds")
    op.drop_index(op.f("ix_billing_refunds_order_id"), table_name="billing_refunds")
    op.drop_table("billing_refunds")
    op.drop_table("billing_gateway_tax_rates")
