"""The front door: the hot plain routes answered before any of the page machinery.

The token endpoint, the registry's notifications and the probes are hit far more often than
any page (a registry asks for a token before nearly every pull), and they need neither the
browser session nor FastAPI's dependency injection. Through the usual stack such a request
would pass about ten layers (FastAPI's telemetry check, Starlette's error and body-limit
middleware, the store's request-id, security-header, body-limit and session middleware, the
exception middleware, the router's walk over every route), each wrapping ``send`` in a
closure of its own: together several times the cost of the bare ASGI request.

:class:`StoreApp` (the FastAPI application class of the store) looks the path up in a
dictionary of the plain routes served at a fixed path first, and serves a match through
:class:`FrontDoor`: **one** layer doing what those layers do for such a request: the request
id (incoming or new, in the logs' context variable and the response), the body cap (a
declared length over it is refused unread, a streamed body counted as it arrives), the
security headers (pre-encoded, ``Cache-Control: no-store`` for secret-bearing answers), the
request metrics and the access log line, with Starlette's error middleware around it so an
unexpected error is answered exactly as elsewhere (the store's 500, its headers and request
id). The store's exception handlers apply as on any route (a busy database is a 503).
Everything else, and a fast path asked with a method it does not serve (405), goes through
the usual stack.

A serving worker includes the rest of its routes (pages, the JSON API: Jinja2, the page and
API modules, their pydantic models) when the first request for one of them arrives
(:meth:`StoreApp.defer_routes`), not at start-up: a worker that serves only the registry's
token endpoint and the probes does not hold them in memory (≈ 17 MiB per worker).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import perf_counter
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from store import request_limits, security_headers
from store.fastpath import fast_routes
from store.observability import middleware as observability
from store.observability.logging import REQUEST_ID, new_request_id

ROUTE_KEY = "store.fast_route"  # the scope key the front door finds its route under


class FrontDoor:
    """Serves one request on a fast route (see the module docstring)."""

    def __init__(self, app: StoreApp) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = []  # the security headers, pre-encoded
        self.header_names: frozenset[bytes] = frozenset()
        self.body_limits: request_limits.BodyLimitMiddleware | None = None
        self.exception_handlers: tuple[dict[Any, Any], dict[int, Any]] = ({}, {})

    def prepare(self) -> None:
        """Read the app's settings once, when the first request arrives (every route,
        handler and setting is in place by then)."""
        app = self.app
        self.headers = security_headers.raw_headers(app.state.error_headers)
        self.header_names = frozenset(name for name, _ in self.headers)
        self.body_limits = request_limits.BodyLimitMiddleware(
            _unused, default=app.state.settings.max_body_bytes
        )
        handlers: dict[Any, Any] = {}
        status_handlers: dict[int, Any] = {}
        for key, handler in app.exception_handlers.items():
            if isinstance(key, int):
                status_handlers[key] = handler
            elif key is not Exception:  # unexpected errors: the error middleware's 500
                handlers[key] = handler
        self.exception_handlers = (handlers, status_handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = perf_counter()
        route: Route = scope[ROUTE_KEY]
        incoming = observability.incoming_request_id(scope)
        request_id = incoming or new_request_id()
        context = REQUEST_ID.set(request_id)
        id_header = (observability.HEADER, request_id.encode("latin-1"))
        extra = self.headers
        names = self.header_names
        status = 500

        async def send_out(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                state = scope.get("state")
                if isinstance(state, dict) and state.get(security_headers.NO_STORE_FLAG):
                    headers = security_headers.with_no_store(headers)
                security_headers.add(headers, extra, names)
                headers.append(id_header)
                message["headers"] = headers
            await send(message)

        try:
            limits = self.body_limits
            assert limits is not None
            refusal = limits.refusal(scope)
            if refusal is not None:
                await request_limits.refuse(scope, send_out, *refusal)
            else:
                if scope["method"] not in ("GET", "HEAD"):
                    receive = limits.counted(scope, receive)
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                scope["starlette.exception_handlers"] = self.exception_handlers
                try:
                    await route.app(scope, receive, send_out)
                except request_limits.BodyTooLarge as exc:
                    if status != 500:  # the response had begun
                        raise
                    await request_limits.refuse(scope, send_out, 413, "too_large", str(exc.detail))
        finally:
            observability.record(scope, route.path, status, perf_counter() - started)
        # Left set when the route raised, so the error's log lines and 500 still carry it.
        REQUEST_ID.reset(context)


async def _unused(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the front door calls its routes itself")


class StoreApp(FastAPI):
    """The store's FastAPI application: the plain routes at a fixed path are served by the
    front door (module docstring), everything else as FastAPI does."""

    _fast: dict[str, Route] | None = None
    _door: FrontDoor | None = None
    _door_app: Any = None
    _deferred: tuple[Callable[[FastAPI], None], Callable[[], None] | None] | None = None
    _deferred_lock: threading.Lock | None = None

    def defer_routes(
        self, include: Callable[[FastAPI], None], then: Callable[[], None] | None = None
    ) -> None:
        """Run ``include`` (which adds routes, nothing else) when the first request that
        the front door does not serve arrives, then ``then``: before that request is
        routed, on a thread (importing pages and the JSON API takes a worker about a
        second of CPU; meanwhile its event loop keeps answering the front door's routes).
        Requests arriving during it wait for it; every route is served as if included at
        start-up. Middleware, exception handlers and state stay the start-up's."""
        self._deferred = (include, then)
        self._deferred_lock = threading.Lock()

    def include_deferred(self) -> None:
        """Include the deferred routes now (once; later calls return when it is done)."""
        lock = self._deferred_lock
        if lock is None:
            return
        with lock:
            deferred = self._deferred
            if deferred is None:
                return
            include, then = deferred
            include(self)
            if self._fast is not None:  # plain routes at a fixed path among them
                self._fast = self._fast_routes()
            self._deferred = None  # last: a request seeing None finds every route
        if then is not None:
            then()

    def _open_door(self) -> dict[str, Route]:
        door = FrontDoor(self)
        door.prepare()
        handler = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        self._door = door
        self._door_app = ServerErrorMiddleware(door, handler=handler, debug=self.debug)
        self._fast = self._fast_routes()
        return self._fast

    def _fast_routes(self) -> dict[str, Route]:
        # FastAPI's own pages (the OpenAPI document, its viewers) describe every route, the
        # deferred ones included: they go through the usual stack, which includes those first.
        own = {self.openapi_url, self.docs_url, self.redoc_url, self.swagger_ui_oauth2_redirect_url}
        return {path: r for path, r in fast_routes(self.router.routes).items() if path not in own}

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of every route (the deferred ones included first)."""
        if self._deferred is not None:
            self.include_deferred()
        return super().openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fast = self._fast if self._fast is not None else self._open_door()
            route = fast.get(scope["path"])
            if route is not None and route.methods and scope["method"] in route.methods:
                if self.root_path:
                    scope["root_path"] = self.root_path
                scope["app"] = self
                scope[ROUTE_KEY] = route
                await self._door_app(scope, receive, send)
                return
        if self._deferred is not None and scope["type"] != "lifespan":
            await run_in_threadpool(self.include_deferred)
        await super().__call__(scope, receive, send)
