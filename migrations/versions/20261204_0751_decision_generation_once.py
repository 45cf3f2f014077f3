"""the decision generation's bump on PostgreSQL: once per statement whose triggers run
(in production the COMMIT, where the deferred triggers all run) instead of 0750's once per
transaction: a transaction whose triggers are made immediate (the tests' shared
connection, never committed, sees its own changes through the token cache) bumps at each
of its statements; a bulk write still bumps once (one update of the counter's row per
written row made its commit quadratic in the rows)

Revision ID: 0751
Revises: 0760
Create Date: 2026-12-04 17:35:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0751"
down_revision: str | Sequence[str] | None = "0760"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "store_bump_decision_generation"
BUMP = "UPDATE registry_decision_generation SET value = value + 1 WHERE id = 1"

# The deferred triggers of a transaction all run in its COMMIT statement, so they share its
# statement_timestamp(): the first bumps and marks it in a transaction-local setting, the
# others see the mark and return. (Made immediate, as the tests' never-committed
# transaction makes them, each statement bumps once.)
ONCE = f"""$$
BEGIN
  IF current_setting('store.decision_bumped_at', true) = statement_timestamp()::text THEN
    RETURN NULL;
  END IF;
  PERFORM set_config('store.decision_bumped_at', statement_timestamp()::text, true);
  {BUMP};
  RETURN NULL;
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS {ONCE}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # 0750's: once per transaction
        flag = "store.decision_generation_bumped"
        op.execute(
            f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF current_setting('{flag}', true) IS DISTINCT FROM 'on' THEN "
            f"PERFORM set_config('{flag}', 'on', true); {BUMP}; END IF; "
            "RETURN NULL; END $$"
        )
