"""Exact-path dispatch of the plain Starlette routes, before the page machinery.

The token endpoint, the registry's notifications and the probes are hit far more often than
any page, and they need neither the browser session nor FastAPI's dependency injection.
FastAPI's router finds a route by walking every included router in turn (tens of regular
expressions for a path registered late, about as much as the whole rest of a request). This
middleware sits inside the security headers and outside the session: a dictionary lookup
on the path hands such a request straight to its route. Everything else, and a fast path
asked with a method it does not serve (405), goes through the usual stack.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send


def walk_routes(routes: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every route with the prefix it is served under, into FastAPI's included routers
    (which it keeps as routers of their own, with their prefix beside them)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        context = getattr(route, "include_context", None)
        if inner is not None and context is not None:
            yield from walk_routes(inner.routes, prefix + (getattr(context, "prefix", "") or ""))
        else:
            yield prefix, route


def fast_routes(routes: Any) -> dict[str, Route]:
    """The application's plain routes (not FastAPI's) served at a path with no parameters
    and no prefix (a route matches its own path)."""
    return {
        route.path: route
        for prefix, route in walk_routes(routes)
        if not prefix and type(route) is Route and not route.param_convertors
    }


class FastPathMiddleware:
    def __init__(self, app: ASGIApp, *, router: Any) -> None:
        self.app = app
        self.router = router
        self.routes: dict[str, Route] | None = None  # on first use: every route is there

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.routes is None:
                self.routes = fast_routes(self.router.routes)
            route = self.routes.get(scope["path"])
            if route is not None:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    await route.handle(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def install(app: Any) -> None:
    """Add the middleware to a FastAPI app (after the session middleware, before the
    security headers: see ``create_app``). The routes are read on the first request."""
    app.add_middleware(FastPathMiddleware, router=app.router)
