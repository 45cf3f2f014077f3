"""Alembic, driven from code: upgrade, current revision, and whether the schema is current.

Alembic itself (with Mako and Pygments, ≈ 11 MiB per process) is imported only by what
migrates or inspects with it. The readiness probe, asked every few seconds in every worker,
reads the revisions from the ``alembic_version`` table and the revision graph from the
migration files' text (:func:`revisions_behind`), so a serving worker never loads it.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect

from store import MIGRATIONS_DIR

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "alembic_version"  # alembic's default; migrations/env.py keeps it


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revisions(url: str) -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def is_current(engine: Engine) -> bool:
    return current_revisions(engine) == head_revisions(str(engine.url))


def upgrade(engine: Engine, revision: str = "heads") -> None:
    from alembic import command

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# --- the revision graph without alembic (the readiness probe) -----------------------------


def _parents(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@lru_cache(maxsize=1)
def revision_graph() -> dict[str, tuple[str, ...]]:
    """Every revision of this code and the revisions it comes after (``down_revision`` and
    ``depends_on``), read from the top-level assignments of the migration files, which are
    parsed, never imported."""
    graph: dict[str, tuple[str, ...]] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name, value = node.target.id, node.value
            elif (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                name, value = node.targets[0].id, node.value
            else:
                continue
            if name in ("revision", "down_revision", "depends_on") and value is not None:
                values[name] = ast.literal_eval(value)
        if "revision" in values:
            parents = _parents(values.get("down_revision")) + _parents(values.get("depends_on"))
            graph[str(values["revision"])] = parents
    return graph


def graph_heads(graph: dict[str, tuple[str, ...]]) -> set[str]:
    """The revisions no other revision comes after."""
    return set(graph) - {p for parents in graph.values() for p in parents}


def revisions_behind(current: set[str]) -> list[str]:
    """Head revisions of this code that a database at ``current`` does not have yet.

    A current revision this code does not know was made by a newer release: the database
    is ahead, and nothing is missing."""
    graph = revision_graph()
    heads = graph_heads(graph)
    have: set[str] = set()
    todo = list(current)
    while todo:
        revision = todo.pop()
        if revision in have:
            continue
        if revision not in graph:
            return []  # a revision of a newer release
        have.add(revision)
        todo.extend(graph[revision])
    return sorted(heads - have)


def stored_revisions(conn: Connection) -> set[str]:
    """The revisions recorded in the database (none when it was never migrated)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return set()
    return {str(row[0]) for row in conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}")}  # noqa: S608
