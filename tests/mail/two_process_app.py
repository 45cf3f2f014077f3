"""App factory for the two-process mail test's uvicorn processes: settings from the
environment, the test gateway, and the outbox sender running beside each app."""

from __future__ import annotations

from fastapi import FastAPI

from store.app import create_app
from store.billing.config import BillingSettings
from store.billing.runtime import build_billing
from store.config import Settings


def make_app() -> FastAPI:
    settings = Settings(environment="test")
    app = create_app(settings, migrate=False, mail_sender=True)
    app.state.billing = build_billing(BillingSettings(), settings)
    return app
