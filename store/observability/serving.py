"""What ``store serve`` gives uvicorn: the logging configuration, and the metrics directory
its worker processes share."""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import shutil
import tempfile
from typing import Any

from store.config import Settings
from store.observability import http_guard, metrics
from store.observability.logging import log_config, resolve_format


def uvicorn_options(settings: Settings, *, workers: int | None, log_level: str) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``.

    With several workers, each process counts its own requests; they add up only through
    prometheus_client's multi-process mode. Unless ``PROMETHEUS_MULTIPROC_DIR`` is set (it
    is then emptied), a fresh directory is made for this run and removed at exit. Workers
    inherit the variable and write their values there; ``/metrics`` in any worker merges
    them.
    """
    if workers and workers > 1:
        directory = metrics.multiprocess_dir()
        if directory is None:
            directory = tempfile.mkdtemp(prefix="store-metrics-")
            atexit.register(shutil.rmtree, directory, True)
            os.environ[metrics.MULTIPROC_ENV] = directory
        metrics.prepare_multiprocess_dir(directory)
    log_format = resolve_format(settings.log_format, settings.environment)
    # The store's middleware writes the access log (store.access, with the request id).
    # The store serves no WebSocket: without a protocol for them uvicorn does not import
    # its WebSocket implementation in every worker (≈ 0.7 MiB each); an upgrade request is
    # answered as plain HTTP.
    return {"log_config": log_config(log_format, log_level), "access_log": False, "ws": "none"}


def guard_headers(config: Any, settings: Settings) -> None:
    """Run uvicorn's HTTP protocol with a deadline for request headers
    (``STORE_HEADER_TIMEOUT``) and one for a connection that sends nothing
    (``STORE_IDLE_CONNECTION_TIMEOUT``; store.observability.http_guard). The deadlines are
    kept on the Config, which worker processes receive with it."""
    config.http = http_guard.protocol_path()
    setattr(config, http_guard.CONFIG_ATTRIBUTE, settings.header_timeout)
    setattr(config, http_guard.IDLE_CONFIG_ATTRIBUTE, settings.idle_connection_timeout)


def settle_heap() -> None:
    """Keep the start-up heap out of the garbage collector's way (in a serving worker, once
    the app is built and every module of a request imported).

    A worker starts with a few hundred thousand objects that live as long as it does: the
    modules, the routes, the models and their SQL. Python's oldest-generation collection
    walks all of them each time enough younger objects have survived, and the objects of
    the requests in flight on the event loop survive every young collection that happens
    while they wait for the database: under load that was a full collection every few
    seconds per worker, each holding the event loop ≈ 80 ms (every request in flight on
    that worker waited for it). Frozen (``gc.freeze``) they are never walked again; the
    collector still finds the cycles among everything made later.

    Then the C allocator gives back to the system the free memory that start-up left in its
    heap (``malloc_trim``: what importing and building the app allocated and freed;
    ≈ 1 MiB of a worker's resident memory, measured)."""
    gc.collect()
    gc.freeze()
    trim_malloc()


def trim_malloc() -> bool:
    """Return the C allocator's free memory to the system where it can (glibc's
    ``malloc_trim``); False where there is no such function (another C library)."""
    global _TRIM
    if _TRIM is None:
        # The process's own symbols, the C library's among them (no search for its file).
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        _TRIM = trim or False
    if not _TRIM:
        return False
    _TRIM(0)
    return True


_TRIM: Any = None  # glibc's malloc_trim, False without one; looked up on first use
