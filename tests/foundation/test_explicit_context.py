"""Context is passed explicitly: no context rides on ``Session.info``, and the catalog
reaches neither the registry nor billing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

import store
from store.catalog import events

ROOT = Path(store.__file__).parent


def _sources() -> list[Path]:
    """The store's modules and the benches (which seed through the same services)."""
    bench = ROOT.parent / "bench"
    found = [p for p in ROOT.rglob("*.py") if "_templates" not in p.parts]
    return sorted(found + (sorted(bench.glob("*.py")) if bench.is_dir() else []))


def test_nothing_reads_or_writes_session_info() -> None:
    """A session's ``info`` dict is no service locator: the key ring, settings and billing
    runtime are arguments (docs/architecture.md). Connection-level ``conn.info`` (SQLite's
    write gate, the search index's bulk flag) is the driver's, not a session's. The one
    key a session's ``info`` holds is its transaction's own state, not context: the search
    documents it changed and has not written yet (store.search.indexer, written before it
    commits), as the session holds its own pending rows."""
    offenders = []
    for path in _sources():
        if path == ROOT / "search" / "indexer.py":
            uses = [line for line in path.read_text().splitlines() if "session.info" in line]
            assert uses and all("_PENDING" in line for line in uses), uses
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "info"
                and isinstance(node.value, ast.Name)
                and node.value.id in ("session", "s", "db")
            ):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert offenders == []


def test_the_catalog_imports_neither_registry_nor_billing() -> None:
    for path in sorted((ROOT / "catalog").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                assert not name.startswith(("store.registry", "store.billing")), (path, name)


def test_an_edit_without_followers_installed_fails_loudly(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "_followers", [])
    with pytest.raises(RuntimeError, match="no catalog followers"):
        events.publish(session, events.AccessChanged("acme/thing"))


def test_followers_run_in_order_in_the_edit_transaction(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Session, events.CatalogEvent]] = []
    monkeypatch.setattr(events, "_followers", [])
    events.follow(lambda s, e: seen.append((s, e)))
    event = events.AccessChanged("acme/thing")
    events.publish(session, event)
    assert seen == [(session, event)]
