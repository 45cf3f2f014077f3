"""`store serve`: checks before handing over to uvicorn, and a real server process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from store import migrate
from store.cli._common import describe_database
from store.config import Settings
from store.db import make_engine
from tests.cli._support import Run
from tests.pg import PG_URL, scratch_database


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, socket.socket]]:
    """Record what would be served (the uvicorn configuration, the bound socket) instead of
    starting a server."""
    calls: list[tuple[Any, socket.socket]] = []

    def record(config: Any, sock: socket.socket) -> None:
        calls.append((config, sock))
        sock.close()

    monkeypatch.setattr("store.cli.serve.run_server", record)
    return calls


def test_serve_on_sqlite_migrates_and_creates_the_secret_first(
    run: Run, uvicorn_calls: list[tuple[Any, socket.socket]], data_dir: Path, database_url: str
) -> None:
    port = _free_port()
    result = run("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "3")
    assert result.code == 0, result.err
    assert f"listening on http://127.0.0.1:{port}" in result.out
    assert str(data_dir.resolve()) in result.out
    assert (data_dir / "secret.key").read_text().strip()
    engine = make_engine(database_url)
    try:
        assert migrate.is_current(engine)
    finally:
        engine.dispose()

    [(config, sock)] = uvicorn_calls
    assert config.app == "store.app:create_serving_app"
    assert config.factory is True
    assert (config.host, config.port, config.workers) == ("127.0.0.1", port, 3)
    assert config.reload is False
    assert sock.fileno() == -1  # it was bound (and closed by the recorder)


def test_a_port_in_use_is_one_clear_line(run: Run, uvicorn_calls: list[Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.code == 1
    assert result.err == f"error: cannot listen on 127.0.0.1:{port}: the port is in use\n"
    assert "listening" not in result.out
    assert uvicorn_calls == []


def test_with_json_logs_the_announcement_is_a_json_record(
    run: Run,
    uvicorn_calls: list[tuple[Any, socket.socket]],
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORE_LOG_FORMAT", "json")
    port = _free_port()
    result = run("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.code == 0, result.err
    [line] = result.out.strip().splitlines()
    record = json.loads(line)
    assert record["message"] == f"Store listening on http://127.0.0.1:{port}"
    assert record["logger"] == "store.serve" and record["level"] == "info"
    assert record["data_dir"] == str(data_dir.resolve())
    assert record["public_url"].startswith(f"http://127.0.0.1:{port}")


def test_workers_and_reload_exclude_each_other(run: Run) -> None:
    assert run("serve", "--workers", "2", "--reload").code == 2
    assert run("serve", "--port", "http").code == 2


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this process, dropped afterwards."""
    if not PG_URL:
        pytest.skip("needs STORE_TEST_DATABASE_URL (PostgreSQL)")
    try:
        with scratch_database("cli") as url:
            yield url
    except OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable: {exc.orig}")


def test_serve_refuses_an_out_of_date_postgresql_schema(
    run: Run,
    uvicorn_calls: list[tuple[Any, socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
    pg_database: str,
) -> None:
    monkeypatch.setenv("STORE_DATABASE_URL", pg_database)
    result = run("serve")
    assert result.code == 1
    assert "store db upgrade" in result.err
    assert uvicorn_calls == []
    # Other commands refuse too, rather than failing on missing tables.
    users = run("users", "list")
    assert users.code == 1
    assert "store db upgrade" in users.err
    assert run("db", "check").code == 1

    assert run("db", "upgrade").code == 0
    assert run("db", "current", "--json").json()["is_current"] is True
    assert run("serve", "--port", str(_free_port())).code == 0
    assert len(uvicorn_calls) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_real_server_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("STORE_DATABASE_URL")
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", "2", "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )  # fmt: skip
        try:
            status = _wait_for(f"http://127.0.0.1:{port}/api/v1/products", proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    output = log.read_text()
    assert status == 200, output
    assert f"listening on http://127.0.0.1:{port}" in output
    assert (tmp_path / "data" / "secret.key").exists()


def _wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return -1  # exited early; the log says why
        try:
            return httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            time.sleep(0.2)
    return -2


def test_messages_never_show_the_database_password() -> None:
    settings = Settings(database_url="postgresql://store:hunter22@db.internal/store")
    shown = describe_database(settings)
    assert "hunter22" not in shown
    assert "db.internal/store" in shown
