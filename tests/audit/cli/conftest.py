"""The CLI fixtures of tests/cli: each module gets its own SQLite database via STORE_*."""

from tests.cli.conftest import (  # noqa: F401
    cli_env,
    data_dir,
    database_url,
    db,
    open_sessions,
    run,
)
