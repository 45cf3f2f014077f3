"""accounts: one namespace table for usernames and organisation slugs

A name taken by a user is taken for organisations and the other way round. Existing names
are copied in; if a username equals an organisation's slug, or an account or organisation
holds a reserved name, the upgrade refuses before changing anything and names every
collision (rename one side, then upgrade again).

Revision ID: 0121
Revises: 0120
Create Date: 2026-12-02 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import store.db

revision: str = "0121"
down_revision: str | Sequence[str] | None = "0120"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of store.validation.RESERVED_NAMES at this revision.
RESERVED = frozenset(
    {
        "admin", "api", "anonymous", "license", "licenses", "library", "login", "logout",
        "robot", "root", "signup", "static", "store", "support", "system", "token", "v1", "v2",
    }
)  # fmt: skip


class NamespaceCollision(Exception):
    """Names held twice: the upgrade cannot continue until they are renamed."""


def collisions(conn: sa.Connection) -> list[str]:
    """Every name held by both a user and an organisation, or reserved, as report lines."""
    users = {
        r.username.lower(): r.username
        for r in conn.execute(sa.text("SELECT username FROM accounts"))
    }
    orgs = {r.slug.lower(): r.slug for r in conn.execute(sa.text("SELECT slug FROM organizations"))}
    lines = [
        f"'{name}' is the username of an account and the slug of an organization"
        for name in sorted(users.keys() & orgs.keys())
    ]
    lines += [
        f"'{users[n]}' is a reserved name held by an account"
        for n in sorted(users.keys() & RESERVED)
    ]
    lines += [
        f"'{orgs[n]}' is a reserved name held by an organization"
        for n in sorted(orgs.keys() & RESERVED)
    ]
    return lines


def upgrade() -> None:
    conn = op.get_bind()
    found = collisions(conn)
    if found:
        raise NamespaceCollision(
            "usernames and organization slugs now share one namespace, and these names "
            "collide: " + "; ".join(found) + ". Rename the account or the organization "
            "(or pick a name that is not reserved), then run the upgrade again."
        )
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Uuid(), nullable=True),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", store.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(kind = 'user' AND account_id IS NOT NULL AND organization_id IS NULL)"
            " OR (kind = 'organization' AND organization_id IS NOT NULL AND account_id IS NULL)",
            name=op.f("ck_namespaces_one_owner"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_namespaces_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_namespaces_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_namespaces")),
        sa.UniqueConstraint("account_id", name=op.f("uq_namespaces_account_id")),
        sa.UniqueConstraint("organization_id", name=op.f("uq_namespaces_organization_id")),
    )
    op.execute(
        "INSERT INTO namespaces (name, kind, account_id, organization_id, created_at)"
        " SELECT username, 'user', id, NULL, created_at FROM accounts"
    )
    op.execute(
        "INSERT INTO namespaces (name, kind, account_id, organization_id, created_at)"
        " SELECT slug, 'organization', NULL, id, created_at FROM organizations"
    )


def downgrade() -> None:
    op.drop_table("namespaces")
