# ruff: noqa: S608  (SQL assembled from the constant names below, never input)
"""the registry's decision generation: one counter that every change able to alter a
/token decision bumps, from triggers, so each process may keep credential rows and their
grant facts in memory while the counter stays the same (store.registry.lookup)

Revision ID: 0750
Revises: 0741
Create Date: 2026-12-04 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0750"
down_revision: str | Sequence[str] | None = "0741"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "registry_decision_generation"

# Every column the token statements read (store.registry.lookup), per table. An insert or a
# delete of any row bumps; an update only when one of these columns really changes, so
# what is written on every request or pull (last_used_at, pull counts, search fields)
# never does.
WATCHED: dict[str, tuple[str, ...]] = {
    "access_tokens": (
        "token_hash",
        "kind",
        "account_id",
        "organization_id",
        "scopes",
        "revoked_at",
        "expires_at",
    ),
    "accounts": (
        "id",
        "username",
        "email",
        "password_hash",
        "is_active",
        "is_admin",
        "totp_enabled_at",
    ),
    "organizations": ("id", "slug"),
    "namespaces": ("name", "kind", "account_id"),
    "memberships": ("organization_id", "account_id", "role"),
    "repository_collaborators": ("repository_id", "account_id", "permission"),
    "hub_repositories": ("id", "name", "visibility"),
    "products": ("id", "repository", "status"),
    "tiers": ("product_id", "billing", "public", "active"),
    "entitlements": (
        "product_id",
        "account_id",
        "organization_id",
        "status",
        "starts_at",
        "ends_at",
        "grace_until",
    ),
}
BUMP = f"UPDATE {TABLE} SET value = value + 1 WHERE id = 1"
FUNCTION = "store_bump_decision_generation"
FLAG = "store.decision_generation_bumped"


def _changed(table: str, dialect: str) -> str:
    if dialect == "postgresql":  # as text: json has no equality operator
        return " OR ".join(f"OLD.{c}::text IS DISTINCT FROM NEW.{c}::text" for c in WATCHED[table])
    return " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED[table])


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.execute(f"INSERT INTO {TABLE} (id, value) VALUES (1, 0)")
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # Once per transaction: the queued row events of a bulk write each call this at
        # commit, and many updates of one row in one transaction cost quadratic time (each
        # walks the row's versions: 8,000 rows took 9.6 s to commit). The flag is local to
        # the transaction (and undone with a rolled-back savepoint, as the update is).
        op.execute(
            f"CREATE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF current_setting('{FLAG}', true) IS DISTINCT FROM 'on' THEN "
            f"PERFORM set_config('{FLAG}', 'on', true); {BUMP}; END IF; "
            "RETURN NULL; END $$"
        )
    for table, columns in WATCHED.items():
        for event in ("insert", "delete", "update"):
            name = f"decision_generation_{table}_{event}"
            spec = f"UPDATE OF {', '.join(columns)}" if event == "update" else event.upper()
            when = f" WHEN ({_changed(table, dialect)})" if event == "update" else ""
            if dialect == "postgresql":
                # Deferred to the commit: the counter's row is the last lock such a
                # transaction takes, held only while it commits, so two writers never wait
                # for each other in a cycle (a bump on the first write would hold it to the
                # end of the transaction).
                op.execute(
                    f"CREATE CONSTRAINT TRIGGER {name} AFTER {spec} ON {table} "
                    f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW{when} "
                    f"EXECUTE FUNCTION {FUNCTION}()"
                )
            else:
                op.execute(
                    f"CREATE TRIGGER {name} AFTER {spec} ON {table} FOR EACH ROW{when} "
                    f"BEGIN {BUMP}; END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in WATCHED:
        for event in ("insert", "delete", "update"):
            name = f"decision_generation_{table}_{event}"
            if dialect == "postgresql":
                op.execute(f"DROP TRIGGER {name} ON {table}")
            else:
                op.execute(f"DROP TRIGGER {name}")
    if dialect == "postgresql":
        op.execute(f"DROP FUNCTION {FUNCTION}()")
    op.drop_table(TABLE)
