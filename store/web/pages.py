"""HTML pages of the storefront."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware

from store.config import Settings
from store.web import legal_files

SESSION_COOKIE = "store_session"


def install_sessions(app: FastAPI) -> None:
    """The browser session's middleware, and the start-up's warning about the trust pages
    not yet written: what pages need in place before the first request (their routes may
    come later, store.frontdoor.StoreApp.defer_routes)."""
    settings: Settings = app.state.settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.resolved_secret_key,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    legal_files.warn_if_missing(settings)


def install(app: FastAPI) -> None:
    """Register the page routes, their templates and the HTML error renderer."""
    from store.web import (
        legal,
        routes_account,
        routes_admin,
        routes_auth,
        routes_catalog,
        routes_hub,
        routes_links,
        routes_products,
        routes_publisher,
        routes_sessions,
        routes_two_factor,
    )
    from store.web.errors import render_error
    from store.web.templating import create_templates

    app.state.web_templates = create_templates()
    app.state.html_error_renderer = render_error
    # Organization actions live under "/publish/{org}/-/..." ("-" is never a product name),
    # so they cannot collide with a product's "/publish/{org}/{name}/..." pages.
    for module in (
        legal,
        routes_catalog,
        routes_hub,
        routes_auth,
        routes_two_factor,
        routes_links,
        routes_account,
        routes_sessions,
        routes_publisher,
        routes_products,
        routes_admin,
    ):
        app.include_router(module.router)
    app.include_router(routes_auth.login_router)
