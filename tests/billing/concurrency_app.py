"""App factory for the concurrency test's uvicorn processes (settings from the environment)."""

from __future__ import annotations

from fastapi import FastAPI

from store.app import create_app
from store.billing.config import BillingSettings
from store.billing.runtime import build_billing
from store.config import Settings


def make_app() -> FastAPI:
    settings = Settings(environment="test")
    app = create_app(settings, migrate=False)
    paths = {getattr(route, "path", "") for route in app.router.routes}
    if "/billing/stripe/webhook" not in paths:  # until store/app.py includes it
        from store.billing.webhook_api import router

        app.include_router(router)
    app.state.billing = build_billing(BillingSettings(), settings)
    return app
