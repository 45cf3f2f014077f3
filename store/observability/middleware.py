"""One ASGI middleware for every HTTP request: the request id, the access log line and the
request metrics.

It is plain ASGI (no BaseHTTPMiddleware, no Request object): per request it costs one header
scan, one context variable, one dictionary update for the metrics (store.observability.metrics
adds them up once a second) and, when ``store.access`` logs at INFO, one log record made
without looking up its caller, written out in batches (store.observability.logging). The
hot plain routes get the same from the front door (store.fastpath), through :func:`record`.
"""

from __future__ import annotations

import logging
import re
from time import perf_counter, time
from typing import Any

from starlette.routing import Mount, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store.observability import metrics
from store.observability.logging import (
    REQUEST_ID,
    direct_handler,
    new_request_id,
    valid_request_id,
)

access_log = logging.getLogger("store.access")
UNMATCHED = "<unmatched>"
# Probes and scrapes come every few seconds: log them at DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
HEADER = b"x-request-id"
_ACCESS_FORMAT = "%s %s %s %.2fms"
# The path parameter of the routes whose path is a secret (store.web.routes_links).
SECRET_PARAM = "{token}"  # noqa: S105 (a name, not a secret)
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


class RouteTemplates:
    """Endpoint → path template(s) of the application's routes, built on first use.

    Routers included with a prefix are walked with their prefix (FastAPI keeps them as
    included routers, and ``scope["route"]`` holds the route without its prefix, or nothing
    for plain Starlette routes). An endpoint served at several paths is told apart by the
    path's regex.
    """

    def __init__(self) -> None:
        self._by_endpoint: dict[Any, list[tuple[re.Pattern[str], str]]] | None = None

    def build(self, routes: Any) -> None:
        table: dict[Any, list[tuple[re.Pattern[str], str]]] = {}
        self._walk(routes, "", table)
        self._by_endpoint = table

    def _walk(self, routes: Any, prefix: str, table: dict[Any, Any]) -> None:
        from store.fastpath import walk_routes

        for route_prefix, route in walk_routes(routes, prefix):
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                continue
            endpoint: Any
            if isinstance(route, Mount):
                endpoint, template = route.app, route_prefix + path + "/{path}"
            else:
                endpoint, template = getattr(route, "endpoint", None), route_prefix + path
            template = _CONVERTOR.sub(r"{\1}", template) or "/"
            regex = compile_path(template)[0]
            table.setdefault(endpoint, []).append((regex, template))

    def template(self, scope: Scope) -> str:
        """The path template of the route that handled the request, or ``<unmatched>``."""
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        if self._by_endpoint is None:
            self.build(getattr(scope.get("app"), "routes", ()))
        assert self._by_endpoint is not None
        candidates = self._by_endpoint.get(endpoint)
        if not candidates:
            return UNMATCHED
        if len(candidates) == 1:
            return candidates[0][1]
        path = scope["path"]
        for regex, template in candidates:
            if regex.match(path):
                return template
        return candidates[0][1]


def incoming_request_id(scope: Scope) -> str | None:
    """The client's X-Request-ID when it is safe to reuse."""
    for key, value in scope["headers"]:
        if key == HEADER:
            return valid_request_id(value.decode("latin-1"))
    return None


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        request_id = incoming_request_id(scope) or new_request_id()
        token = REQUEST_ID.set(request_id)
        header = (HEADER, request_id.encode("latin-1"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record(scope, self.routes.template(scope), status, perf_counter() - started)
        # Left set when the app raised, so the server's error log still has the id.
        REQUEST_ID.reset(token)


def record(scope: Scope, route: str, status: int, elapsed: float) -> None:
    """Count a finished request in the metrics and write its access log line."""
    metrics.http_request(scope["method"], route, status, elapsed)
    _log_access(scope, route, status, elapsed)


def _log_access(scope: Scope, route: str, status: int, elapsed: float) -> None:
    # A link by e-mail (a password reset, a change of address) carries its secret in the
    # path: such a request is logged by its route, so reading the logs opens no account.
    path: str = route if SECRET_PARAM in route else scope["path"]
    level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    client: Any = scope.get("client")
    duration_ms = round(elapsed * 1000, 2)
    method = scope["method"]
    fields = {
        "method": method,
        "path": path,
        "route": route,
        "status": status,
        "duration_ms": duration_ms,
        "client": client[0] if client else None,
    }
    direct = direct_handler(access_log, level)
    if direct is not None:
        # As store serve configures logging: the line the record would have become, made
        # without the record, the logger's and the handler's machinery (half its cost).
        handler, formatter = direct
        message = _ACCESS_FORMAT % (method, path, status, duration_ms)
        line = formatter.access_line(
            time(), level, access_log.name, message, REQUEST_ID.get(), fields
        )
        handler.add_line(line)
        return
    # Logger.log would first look up the calling frame (a third of the cost of a line), which
    # no formatter of the store shows.
    access_log.handle(
        access_log.makeRecord(
            access_log.name,
            level,
            __file__,
            0,
            _ACCESS_FORMAT,
            (method, path, status, duration_ms),
            None,
            extra=fields,
        )
    )
