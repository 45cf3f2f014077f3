"""billing_trial_claims: one free trial per person (and per organisation) per product

Revision ID: 0221
Revises: 0121
Create Date: 2026-12-02 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0221"
down_revision: str | Sequence[str] | None = "0121"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billing_trial_claims",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("subscription_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_billing_trial_claims_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_billing_trial_claims_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_billing_trial_claims_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["billing_subscriptions.id"],
            name=op.f("fk_billing_trial_claims_subscription_id_billing_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_trial_claims")),
        sa.UniqueConstraint(
            "product_id", "account_id", name=op.f("uq_billing_trial_claims_account")
        ),
        sa.UniqueConstraint(
            "product_id", "organization_id", name=op.f("uq_billing_trial_claims_organization")
        ),
    )
    op.create_index(
        op.f("ix_billing_trial_claims_subscription_id"),
        "billing_trial_claims",
        ["subscription_id"],
        unique=False,
    )
    # Trials taken before claims existed: the subscriptions that had one.
    op.execute(
        """
        INSERT INTO billing_trial_claims (id, product_id, account_id, organization_id,
                                          subscription_id, created_at)
        SELECT s.id, s.product_id, s.account_id, NULL, s.id, s.created_at
        FROM billing_subscriptions s
        WHERE s.trial_end IS NOT NULL
          AND s.created_at = (SELECT min(s2.created_at) FROM billing_subscriptions s2
                              WHERE s2.product_id = s.product_id
                                AND s2.account_id = s.account_id
                                AND s2.trial_end IS NOT NULL)
        """
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_billing_trial_claims_subscription_id"), table_name="billing_trial_claims"
    )
    op.drop_table("billing_trial_claims")
