"""What ``store serve`` gives uvicorn: the logging configuration, and the metrics directory
its worker processes share."""

from __future__ import annotations

import atexit
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
    return {"log_config": log_config(log_format, log_level), "access_log": False}


def guard_headers(config: Any, settings: Settings) -> None:
    """Run uvicorn's HTTP protocol with a deadline for request headers
    (``STORE_HEADER_TIMEOUT``) and one for a connection that sends nothing
    (``STORE_IDLE_CONNECTION_TIMEOUT``; store.observability.http_guard). The deadlines are
    kept on the Config, which worker processes receive with it."""
    config.http = http_guard.protocol_path()
    setattr(config, http_guard.CONFIG_ATTRIBUTE, settings.header_timeout)
    setattr(config, http_guard.IDLE_CONFIG_ATTRIBUTE, settings.idle_connection_timeout)
