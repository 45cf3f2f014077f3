"""`store db upgrade|current|check`: the database schema, which comes from Alembic only."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy import Engine

from store import migrate
from store.cli._common import (
    add_json_option,
    command,
    describe_database,
    emit,
    load_settings,
    open_engine,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `store db`."""
    parser = subparsers.add_parser(
        "db",
        help="migrate and inspect the database schema",
        description="Migrate and inspect the database schema (Alembic revisions).",
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)

    upgrade = sub.add_parser(
        "upgrade",
        help="apply migrations up to the latest revision",
        description="Apply every pending migration (or up to REVISION).",
    )
    upgrade.add_argument("revision", nargs="?", default="heads", help="target (default: heads)")
    add_json_option(upgrade)
    upgrade.set_defaults(func=_upgrade)

    current = sub.add_parser(
        "current",
        help="print the current and latest revisions",
        description="Print the database's revision(s), the latest one(s) and whether they agree.",
    )
    add_json_option(current)
    current.set_defaults(func=_current)

    check = sub.add_parser(
        "check",
        help="exit 1 unless the schema is current and matches the models",
        description=(
            "Exit 0 when the database is at the latest revision and the models match the "
            "migrations; otherwise print what differs and exit 1."
        ),
    )
    add_json_option(check)
    check.set_defaults(func=_check)


def _status(engine: Engine) -> dict[str, Any]:
    current = sorted(migrate.current_revisions(engine))
    heads = sorted(migrate.head_revisions(str(engine.url)))
    return {"current": current, "heads": heads, "is_current": current == heads}


def _status_text(data: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"database: {data['database']}",
            f"current:  {', '.join(data['current']) or 'none (empty database)'}",
            f"head:     {', '.join(data['heads'])}",
            "up to date" if data["is_current"] else "out of date: run `store db upgrade`",
        ]
    )


@command
def _upgrade(args: argparse.Namespace) -> int:
    """Apply pending migrations."""
    settings = load_settings()
    with open_engine(settings) as engine:
        before = sorted(migrate.current_revisions(engine))
        migrate.upgrade(engine, args.revision)
        data = {"database": describe_database(settings), "previous": before, **_status(engine)}
    emit(
        args,
        data,
        text=lambda d: (
            f"Upgraded {d['database']}: {', '.join(d['previous']) or 'none'} → "
            f"{', '.join(d['current']) or 'none'}"
            if d["previous"] != d["current"]
            else f"{d['database']} is already at {', '.join(d['current']) or 'none'}"
        ),
    )
    return 0


@command
def _current(args: argparse.Namespace) -> int:
    """Print the revisions."""
    settings = load_settings()
    with open_engine(settings) as engine:
        data = {"database": describe_database(settings), **_status(engine)}
    emit(args, data, text=_status_text)
    return 0


@command
def _check(args: argparse.Namespace) -> int:
    """Exit 1 when the schema is behind the migrations or the models differ from them."""
    settings = load_settings()
    with open_engine(settings) as engine:
        data = {"database": describe_database(settings), **_status(engine), "differences": []}
        if data["is_current"]:
            data["differences"] = [repr(d) for d in _model_differences(engine)]
    ok = data["is_current"] and not data["differences"]
    data["ok"] = ok

    def text(d: dict[str, Any]) -> str:
        if not d["is_current"]:
            return _status_text(d)
        if d["differences"]:
            lines = ["The models differ from the migrations (add a migration):"]
            return "\n".join(lines + [f"  {line}" for line in d["differences"]])
        return f"{d['database']} is up to date and matches the models."

    if ok or args.json:
        emit(args, data, text=text)
    else:
        print(text(data), file=sys.stderr)
    return 0 if ok else 1


def _model_differences(engine: Engine) -> list[Any]:
    from store.models import schema_differences

    return schema_differences(engine)
