"""The CLI fixtures of tests/cli: each module gets its own SQLite database via STORE_*."""

from tests.cli.conftest import cli_env, data_dir, database_url, db, run  # noqa: F401
