"""The schema comes from Alembic only; the models and the migrations must agree."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from store import migrate
from store.models import Base


def test_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def test_database_is_at_head(engine: Engine) -> None:
    assert migrate.is_current(engine)
    assert migrate.current_revisions(engine) == migrate.head_revisions(str(engine.url))
