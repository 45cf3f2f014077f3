"""Search tests run on every configured backend through the shared fixtures; this file adds
the search routers to the app when the application factory does not include them yet."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

import store.search  # noqa: F401  (installs the index listeners)


@pytest.fixture
def app(app: FastAPI) -> FastAPI:
    paths = {getattr(r, "path", "") for r in app.router.routes}
    from store.search.api import router as api_router
    from store.search.docker_api import router as docker_router
    from store.web.routes_search import router as pages_router

    if "/api/v1/search" not in paths:
        app.include_router(api_router, prefix="/api/v1")
    if "/v1/search" not in paths:
        app.include_router(docker_router)
    if "/search" not in paths:
        app.include_router(pages_router)
    return app
