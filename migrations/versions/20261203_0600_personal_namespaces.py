"""hub: personal namespaces, repository collaborators, a namespace's default visibility

* ``repository_collaborators``: accounts given ``read``, ``write`` or ``admin`` on one
  repository of a personal namespace; the may-pull rule reads them.
* ``namespaces.default_visibility``: the visibility a repository gets when it is created in
  the namespace (``private`` unless its owner says otherwise).

Revision ID: 0600
Revises: 0501
Create Date: 2026-12-03 08:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0600"
down_revision: str | Sequence[str] | None = "0501"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "repository_collaborators",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("repository_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=False),
        sa.Column("permission", sa.String(length=16), nullable=False),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "permission IN ('read', 'write', 'admin')",
            name=op.f("ck_repository_collaborators_permission"),
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["hub_repositories.id"],
            name=op.f("fk_repository_collaborators_repository_id_hub_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_repository_collaborators_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repository_collaborators")),
        sa.UniqueConstraint(
            "repository_id", "account_id", name=op.f("uq_repository_collaborators_repository_id")
        ),
    )
    op.create_index(
        op.f("ix_repository_collaborators_account_id"),
        "repository_collaborators",
        ["account_id"],
    )
    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "default_visibility",
                sa.String(length=16),
                nullable=False,
                server_default="private",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("namespaces", schema=None) as batch_op:
        batch_op.drop_column("default_visibility")
    op.drop_index(
        op.f("ix_repository_collaborators_account_id"), table_name="repository_collaborators"
    )
    op.drop_table("repository_collaborators")
