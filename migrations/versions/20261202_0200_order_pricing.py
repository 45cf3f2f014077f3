"""billing: what the quote said, recorded on orders and subscriptions

Orders and subscriptions keep the quantity, the discount, the tax rate applied and the
buyer's tax details (country, VAT id, reverse charge), so receipts, renewals and the sales
report repeat what the buyer was shown. Existing rows: quantity 1, no discount, no country.

Revision ID: 0200
Revises: 0220
Create Date: 2026-12-02 20:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0200"
down_revision: str | Sequence[str] | None = "0220"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TAX_COLUMNS = (
    ("quantity", lambda: sa.Column("quantity", sa.Integer(), nullable=False, server_default="1")),
    (
        "discount_minor",
        lambda: sa.Column("discount_minor", sa.Integer(), nullable=False, server_default="0"),
    ),
    (
        "tax_rate",
        lambda: sa.Column("tax_rate", sa.String(length=12), nullable=False, server_default="0"),
    ),
    ("tax_country", lambda: sa.Column("tax_country", sa.String(length=2), nullable=True)),
    ("vat_id", lambda: sa.Column("vat_id", sa.String(length=32), nullable=True)),
    (
        "reverse_charge",
        lambda: sa.Column(
            "reverse_charge", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    ),
)


def upgrade() -> None:
    for table in ("billing_orders", "billing_subscriptions"):
        with op.batch_alter_table(table) as batch:
            for _name, column in _TAX_COLUMNS:
                batch.add_column(column())
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.add_column(sa.Column("tax_minor", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("trial_days", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("billing_subscriptions") as batch:
        batch.drop_column("trial_days")
        batch.drop_column("tax_minor")
    for table in ("billing_subscriptions", "billing_orders"):
        with op.batch_alter_table(table) as batch:
            for name, _column in reversed(_TAX_COLUMNS):
                batch.drop_column(name)
