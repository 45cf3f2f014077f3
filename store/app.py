"""The application factory: nothing is read from the environment at import time."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import configure_mappers
from starlette.concurrency import run_in_threadpool

from store import (
    STATIC_DIR,
    __version__,
    followers,
    frontdoor,
    observability,
    request_limits,
    security,
    security_headers,
)
from store.billing.config import stripe_environment
from store.config import Settings
from store.db import WriteTurns, make_engine, make_sessionmaker
from store.http_errors import install_error_handlers
from store.keys.service import KeyRing
from store.models import Base  # noqa: F401  (every model mapped before the first request)
from store.observability import serving
from store.observability.logging import flush_log_handlers
from store.registry.credentials import preload as registry_preload
from store.registry.routes import router as registry_routes
from store.web.pages import install_sessions

log = logging.getLogger("store")

API_DESCRIPTION = """
The Store's JSON API: accounts, publishers, products and tiers, entitlements, licenses,
registry access and search.

Authenticate with a personal access token that has the `api` scope:
`Authorization: Bearer stp_...`. Errors always have the shape
`{"error": "<stable code>", "detail": "<message for people>"}`.
"""


def create_serving_app() -> FastAPI:
    """The app ``store serve`` runs in each worker: with the mail sender unless
    ``STORE_MAIL_SENDER=false`` (then ``store mail send`` processes deliver). ``store serve``
    has brought the schema up to date before starting the workers (and refuses to start on
    an out-of-date PostgreSQL schema), so the workers do not migrate."""
    settings = Settings()
    app = create_app(settings, migrate=False, mail_sender=settings.mail_sender, lean=True)
    # The models' mappers are configured by the first ORM statement (the key ring's, in the
    # lifespan): ≈ 10 MiB of objects that, made after the freeze below, every full
    # collection would walk (12 ms of CPU each, measured). Configured now, they are frozen.
    configure_mappers()
    serving.settle_heap()  # after every import and the app's own objects
    return app


def create_app(
    settings: Settings | None = None,
    *,
    migrate: bool | None = None,
    mail_sender: bool = False,
    lean: bool = False,
) -> FastAPI:
    """The store's ASGI app. ``mail_sender`` runs the outbox sender beside it (a thread of
    this process; any number of processes may run one).

    ``lean``: the pages and the JSON API (their modules, templates and models) are loaded
    when the first request for anything but the registry's endpoints and the probes
    arrives, not at start-up (store.frontdoor.StoreApp.defer_routes): a worker serving only
    the registry's token requests stays ≈ 17 MiB smaller. Every route is served either way.
    """
    settings = settings or Settings()
    followers.install()  # catalog edits kept in step by the registry and billing
    observability.check_settings(
        settings, stripe_environment
    )  # every problem at once, as a ConfigurationError
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    if migrate is None:
        migrate = settings.is_sqlite
    if migrate:
        from store import migrate as migrations

        migrations.upgrade(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The signing keys exist before the first request needs one (made inside a request
        # that writes, on SQLite the key would wait for that request's own transaction).
        # An unreachable database must not stop the start: /readyz reports it, and the keys
        # are then made on first use.
        try:
            await run_in_threadpool(app.state.keyring.ensure)
        except Exception:
            log.warning("could not make the signing keys at start-up", exc_info=True)
        stop_sender = _start_mail_sender(app) if mail_sender else None
        yield
        # The last requests' access lines, before the process may end without atexit.
        flush_log_handlers()
        if stop_sender is not None:
            stop_sender()
        registry = getattr(app.state, "registry", None)
        if registry is not None:
            registry.dispose()
        engine.dispose()

    otel = settings.opentelemetry
    app = frontdoor.StoreApp(
        telemetry={"tracing": otel, "metrics": otel, "logs": otel},
        title="Store",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger UI from the store's own files: store.web.assets
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.write_turns = WriteTurns(engine)
    security.password_checks.configure(settings.password_check_slots, settings.password_check_wait)
    app.state.keyring = KeyRing(
        lambda: app.state.sessionmaker,
        settings.resolved_secret_key,
        refresh_seconds=settings.keys_refresh_seconds,
    )
    # The payment gateway follows a catalog edit after its response (store.catalog.events).
    app.state.after_catalog_edit = followers.GatewayFollowUp(app.state)

    install_error_handlers(app)
    # The registry's token endpoint and notifications (the path of every pull).
    app.include_router(registry_routes)
    registry_preload()
    if lean:
        # The heap those routes add is kept out of the collector's way as start-up's is.
        app.defer_routes(_include_routers, then=serving.settle_heap)
    else:
        _include_routers(app)
    # /token, the probes...: served by the front door of StoreApp, before this stack.
    install_sessions(app)  # the pages' session, innermost as before
    request_limits.install(app)  # bodies over their cap: 413 before they are read
    security_headers.install(app)  # CSP, HSTS, frame-ancestors... on every response
    observability.install(app)  # last: its middleware is the outermost
    return app


def _start_mail_sender(app: FastAPI) -> Callable[[], None]:
    """Deliver the outbox from a thread of this process; the function that stops it."""
    from store.mail.sender import Sender

    sender = Sender(app.state.sessionmaker, app.state.settings)
    stop = threading.Event()
    thread = threading.Thread(
        target=sender.run_forever, args=(stop,), name="store-mail-sender", daemon=True
    )
    thread.start()

    def _stop() -> None:
        stop.set()
        thread.join(timeout=app.state.settings.mail_smtp_timeout + 5)

    return _stop


def _include_routers(app: FastAPI) -> None:
    """Every route but the registry's endpoints and the probes: the JSON API and pages."""
    from store.accounts.api import router as accounts_api
    from store.audit.api import router as audit_api
    from store.billing.api import router as billing_api
    from store.billing.sale_notices_api import router as sale_notices_api
    from store.billing.webhook_api import router as billing_webhook
    from store.builds.api import router as builds_api
    from store.catalog.api import router as catalog_api
    from store.hub.api import hub_v2
    from store.hub.api import router as repositories_api
    from store.hub.api import tags_router as repository_tags_api
    from store.licensing.api import router as licensing_api
    from store.licensing.public import router as licensing_public
    from store.privacy.api import router as privacy_api
    from store.registry.api import router as registry_api
    from store.search.api import router as search_api
    from store.search.docker_api import router as docker_search
    from store.signing.api import router as signing_api
    from store.web import assets
    from store.web.pages import install as install_web
    from store.web.routes_audit import router as audit_pages
    from store.web.routes_billing import router as billing_pages
    from store.web.routes_builds import router as builds_pages
    from store.web.routes_licenses import router as licensing_pages
    from store.web.routes_mail import router as mail_pages
    from store.web.routes_mail import unsubscribe_router as mail_unsubscribe
    from store.web.routes_search import router as search_pages
    from store.web.routes_signing import router as signing_pages

    for router in (
        accounts_api,
        privacy_api,
        catalog_api,
        licensing_api,
        registry_api,
        repository_tags_api,
        repositories_api,
        billing_api,
        sale_notices_api,
        search_api,
    ):
        app.include_router(router, prefix="/api/v1")
    # License keys and revocation lists.
    app.include_router(licensing_public)
    app.include_router(licensing_pages)
    # `docker search` (the index search API) and the search page.
    app.include_router(docker_search)
    app.include_router(hub_v2)
    app.include_router(search_pages)
    # Payment webhooks, checkout and purchase pages.
    app.include_router(billing_webhook)
    app.include_router(billing_pages)
    # Signing keys, signatures and certification; the audit log.
    app.include_router(signing_api, prefix="/api/v1")
    app.include_router(audit_api, prefix="/api/v1")
    app.include_router(signing_pages)
    app.include_router(audit_pages)
    # Notice preferences, unsubscribe links, the outbox for administrators.
    app.include_router(mail_pages)
    app.include_router(mail_unsubscribe)
    app.include_router(builds_api, prefix="/api/v1")
    app.include_router(builds_pages)
    install_web(app)
    app.add_route("/api/docs", assets.api_docs, methods=["GET"], include_in_schema=False)
    app.add_route("/favicon.ico", assets.favicon, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
