"""`store db upgrade|current|check`."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from store.db import make_engine
from tests.cli._support import Run


def test_check_fails_on_an_unmigrated_database(run: Run) -> None:
    result = run("db", "check")
    assert result.code == 1
    assert "store db upgrade" in result.err

    result = run("db", "current", "--json")
    assert result.code == 0
    data = result.json()
    assert data["current"] == []
    assert data["is_current"] is False
    assert data["heads"]


def test_upgrade_then_current_and_check(run: Run) -> None:
    result = run("db", "upgrade", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["previous"] == []
    assert data["is_current"] is True
    assert data["current"] == data["heads"]

    again = run("db", "upgrade")
    assert again.code == 0
    assert "already at" in again.out

    current = run("db", "current")
    assert current.code == 0
    assert "up to date" in current.out

    check = run("db", "check", "--json")
    assert check.code == 0, f"models and migrations differ: {check.out}"
    assert check.json()["ok"] is True
    assert check.json()["differences"] == []


def test_check_reports_models_that_differ_from_migrations(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    monkeypatch.setenv("STORE_DATABASE_URL", url)
    assert run("db", "upgrade").code == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_memberships_account_id"))
    engine.dispose()

    result = run("db", "check")
    assert result.code == 1
    assert "ix_memberships_account_id" in result.err

    data = run("db", "check", "--json")
    assert data.code == 1
    assert data.json()["ok"] is False
    assert any("add_index" in d for d in data.json()["differences"])


def test_unknown_db_action_is_a_usage_error(run: Run) -> None:
    result = run("db", "downgrade")
    assert result.code == 2
    assert "invalid choice" in result.err


def test_bad_settings_are_reported_without_a_traceback(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORE_PUBLIC_URL", "store.example.com")
    result = run("db", "current")
    assert result.code == 1
    assert result.err.startswith("error: invalid settings: STORE_PUBLIC_URL")
