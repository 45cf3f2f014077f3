"""The embedded default keeps its data to its owner: the data directory 0700, the database,
its -wal/-shm and the generated secret 0600, whatever the process umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from store.app import create_app
from store.config import Settings


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the usual default: files 0644, directories 0755
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_directory_database_and_secret_are_owner_only(
    tmp_path: Path, loose_umask: None
) -> None:
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, environment="test", public_url="http://store.test")
    app = create_app(settings)  # makes the directory and the secret, migrates SQLite
    try:
        with TestClient(app, base_url="http://store.test") as client:
            created = client.post(
                "/api/v1/accounts",
                json={"username": "perm", "email": "perm@example.com", "password": "pw-" * 4},
            )
            assert created.status_code == 201, created.text
            # While connections are open the write-ahead log and shared memory exist.
            files = {p.name: _mode(p) for p in data_dir.iterdir()}
    finally:
        app.state.engine.dispose()
    assert _mode(data_dir) == 0o700
    assert {"store.db", "store.db-wal", "store.db-shm", "secret.key"} <= set(files), files
    assert {name: mode for name, mode in files.items() if mode != 0o600} == {}


def test_an_existing_data_directory_is_narrowed(tmp_path: Path, loose_umask: None) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    (data_dir / "store.db").touch(mode=0o644)
    settings = Settings(data_dir=data_dir, environment="test")
    settings.ensure_data_dir()
    assert _mode(data_dir) == 0o700
    secret = settings.resolved_secret_key
    assert (data_dir / "secret.key").read_text() == secret
    assert _mode(data_dir / "secret.key") == 0o600
    app = create_app(settings)
    app.state.engine.dispose()
    assert _mode(data_dir / "store.db") == 0o600
