"""A listing edit's look-up of the product's sub-repositories (``acme/app/...``) is an index
range on both databases, never a scan of every hub repository (146 ms at 1,000,000)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.registry.models import HubRepository, names_under
from store.search import indexer
from tests.search.helpers import make_repo


def _plan(session: Session, statement: object) -> list[str]:
    conn = session.connection()
    sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    if conn.dialect.name == "postgresql":
        # A handful of rows: a sequential scan would be cheaper, so it is ruled out and the
        # plan shows whether an index can serve the condition at all.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return [row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}")]
    return [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


def test_the_sub_repository_look_up_uses_an_index(session: Session) -> None:
    for i in range(50):
        make_repo(session, f"ns{i}/app{i}")
    dialect = session.connection().dialect.name
    plan = _plan(session, indexer.sub_repositories(dialect, ["acme/app", "acme/web"]))
    text = "\n".join(plan)
    if dialect == "postgresql":
        assert "Seq Scan" not in text, text
        assert "ix_hub_repositories_name_pattern" in text, text
    else:
        assert "SCAN hub_repositories" not in text, text
        assert "USING" in text and "INDEX" in text, text


def test_the_range_holds_exactly_the_names_under(session: Session) -> None:
    names = [
        "acme/app",
        "acme/app/worker",
        "acme/app/",
        "acme/app/a/b",
        "acme/app0",
        "acme/app2/x",
        "acme/apps",
        "acme/ap_/x",
        "acme/ap%/x",
        "acme/appé/x",
    ]
    for name in names:
        make_repo(session, name)
    dialect = session.connection().dialect.name
    for parent, wanted in [
        ("acme/app", {"acme/app/worker", "acme/app/", "acme/app/a/b"}),
        ("acme/ap_", {"acme/ap_/x"}),
        ("acme/ap%", {"acme/ap%/x"}),
        ("acme/appé", {"acme/appé/x"}),
    ]:
        found = session.scalars(
            select(HubRepository.name).where(names_under(parent, dialect))
        ).all()
        assert set(found) == wanted, parent
