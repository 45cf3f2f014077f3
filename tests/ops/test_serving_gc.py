"""A serving worker's start-up heap is kept out of the garbage collector's walks
(store.observability.serving.settle_heap)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_serving_app_freezes_its_start_up_heap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Built by ``create_serving_app``, the app's modules, routes and models (their mappers
    configured) are frozen: a full collection walks only what was made after (the
    requests' objects), not the hundreds of thousands of objects a worker starts with."""
    code = """
import gc
from store import migrate
from store.config import Settings
from store.db import make_engine
migrate.upgrade(make_engine(Settings().resolved_database_url))
from store.app import create_serving_app
app = create_serving_app()
frozen, walked = gc.get_freeze_count(), len(gc.get_objects())
from store.db import Base
print(all(mapper.configured for mapper in Base.registry.mappers))
print(frozen, walked)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.update(STORE_DATA_DIR=str(tmp_path), STORE_SECRET_KEY="s" * 32, STORE_ENVIRONMENT="test")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    configured, counts = result.stdout.strip().splitlines()[-2:]
    # The mappers were configured before the freeze (not by the first ORM statement after
    # it: ≈ 10 MiB of objects every full collection would walk).
    assert configured == "True"
    frozen, walked = map(int, counts.split())
    assert frozen > 100_000
    assert walked < frozen / 10


def test_settling_the_heap_returns_the_allocators_free_memory(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """After the freeze, ``malloc_trim`` gives back what start-up allocated and freed
    (glibc; elsewhere there is nothing to call and nothing fails)."""
    import gc
    import platform

    from store.observability import serving

    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(serving, "trim_malloc", lambda: calls.append("trim") or True)
    serving.settle_heap()
    assert calls == ["freeze", "trim"]
    monkeypatch.undo()
    expected = platform.libc_ver()[0] == "glibc"
    assert serving.trim_malloc() is expected
    assert serving.trim_malloc() is expected  # looked up once, called again


def test_workers_load_no_websocket_protocol(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The store serves no WebSocket: uvicorn is told so (and then imports no WebSocket
    implementation in its workers)."""
    from store.config import Settings
    from store.observability.serving import uvicorn_options

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    assert uvicorn_options(settings, workers=1, log_level="info")["ws"] == "none"
