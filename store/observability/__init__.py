"""Operations: configuration checks at start, health and readiness, metrics, logs.

``create_app`` calls :func:`check_settings` first and :func:`install` last (docs/operations.md).
"""

from __future__ import annotations

from typing import Any

from store.observability.config_check import ConfigurationError, check_settings

__all__ = ["ConfigurationError", "check_settings", "install"]


def install(app: Any) -> None:
    """Add the request middleware (request id, access log, request metrics) and the
    ``/healthz``, ``/readyz`` and ``/metrics`` routes.

    Call it after every other middleware is added: the last added is the outermost, so the
    request id and the timing cover the whole stack.
    """
    from store.observability import health
    from store.observability.logging import stamp_records
    from store.observability.middleware import ObservabilityMiddleware

    stamp_records()

    for path, endpoint in (
        ("/healthz", health.healthz),
        ("/readyz", health.readyz),
        ("/metrics", health.metrics_endpoint),
    ):
        app.add_route(path, endpoint, methods=["GET", "HEAD"], include_in_schema=False)
    app.add_middleware(ObservabilityMiddleware)
