"""The schema comes from Alembic only; the models and the migrations must agree."""

from sqlalchemy import Engine

from store import migrate
from store.models import schema_differences


def test_models_match_migrations(engine: Engine) -> None:
    diff = schema_differences(engine)
    assert diff == [], f"models and migrations differ: {diff}"


def test_database_is_at_head(engine: Engine) -> None:
    assert migrate.is_current(engine)
    assert migrate.current_revisions(engine) == migrate.head_revisions(str(engine.url))
