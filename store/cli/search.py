"""`store search reindex|query`: rebuild the search index, or search from the shell."""

from __future__ import annotations

import argparse
import time
from typing import Any

from store.cli._common import (
    add_command,
    command,
    emit,
    load_settings,
    open_engine,
    prepare_schema,
    table,
    unit_of_work,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `store search`."""
    import store.search  # noqa: F401  (installs the index listeners for every command)

    parser = subparsers.add_parser(
        "search",
        help="rebuild or query the search index",
        description="Rebuild or query the search index over listings and hub repositories.",
    )
    sub = parser.add_subparsers(dest="search_command", metavar="ACTION", required=True)
    add_command(sub, "reindex", _reindex, help="rebuild every search document (recovery)")
    query = add_command(sub, "query", _query, help="search as an anonymous visitor would")
    query.add_argument("q", help='the query, e.g. redis or "in memory" -alpine')
    query.add_argument(
        "--page", type=int, default=1, help="page of results, from 1 (default %(default)s)"
    )
    query.add_argument(
        "--per-page", type=int, default=20, help="results per page, 1-100 (default %(default)s)"
    )


@command
def _reindex(args: argparse.Namespace) -> int:
    """Rebuild every search document from products and hub repositories, then the full-text
    structures. Normal operation keeps the index in step by itself; this is for recovery."""
    from store.search import indexer

    settings = load_settings()
    started = time.perf_counter()
    with open_engine(settings) as engine:
        prepare_schema(engine, settings)
        # Transactions of its own (short ones on SQLite, so writers go on meanwhile).
        counts: dict[str, Any] = dict(indexer.full_reindex(engine))
    counts["seconds"] = round(time.perf_counter() - started, 2)
    emit(
        args,
        counts,
        text=lambda c: (
            f"indexed {c['store']} listings and {c['hub']} hub repositories "
            f"({c['changed']} documents changed) in {c['seconds']} s"
        ),
    )
    return 0


@command
def _query(args: argparse.Namespace) -> int:
    """Search what an anonymous visitor sees and print the ranked results."""
    from store.search import service

    with unit_of_work() as session:
        results = service.search(session, q=args.q, page=args.page, per_page=args.per_page)
        rows: list[dict[str, Any]] = [
            {
                "rank": (results.page - 1) * results.per_page + i + 1,
                "source": h.doc.source,
                "name": h.doc.name,
                "title": h.doc.title,
                "pulls": h.doc.pull_count,
                "badges": ",".join(
                    b for b in ("official", "certified", "verified") if getattr(h.doc, b)
                ),
            }
            for i, h in enumerate(results.hits)
        ]
        data = {"total": results.total, "total_exact": results.total_exact, "results": rows}
    emit(
        args,
        data,
        text=lambda d: table(
            d["results"],
            ["rank", "source", "name", "title", "pulls", "badges"],
            empty="no results",
        ),
    )
    return 0
