"""The plain routes at a fixed path: what the front door (store.frontdoor) serves itself.

The token endpoint, the registry's notifications and the probes are hit far more often than
any page, and they need neither the browser session nor FastAPI's dependency injection.
FastAPI's router finds a route by walking every included router in turn (tens of regular
expressions for a path registered late); these are found by a dictionary lookup on the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.routing import Route


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
