"""`store serve` as a real process for the hardening tests: free port, own data directory,
stopped by its PID."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.registry_env import clean_env, free_port, wait_http


@dataclass
class Served:
    base: str
    host: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes]


@contextmanager
def store_serve(
    tmp_path: Path,
    database_url: str,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
) -> Iterator[Served]:
    """Run ``store serve --workers N`` on a free port against ``database_url`` (migrated by
    the caller on PostgreSQL; SQLite is migrated by serve itself)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(exist_ok=True)
    port = free_port()
    variables = clean_env(
        {
            "STORE_DATA_DIR": str(data_dir),
            "STORE_DATABASE_URL": database_url,
            "STORE_SECRET_KEY": "hardening-test-secret-0123456789",
            "STORE_ENVIRONMENT": "test",
            **(env or {}),
        }
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "store.cli.main", "serve", "--port", str(port),
             "--workers", str(workers), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=variables,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", timeout=60, proc=proc)
        yield Served(base, "127.0.0.1", port, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
