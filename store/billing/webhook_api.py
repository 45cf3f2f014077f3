"""``POST /billing/stripe/webhook``: Stripe's events, verified and applied exactly once."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from store.billing import sweep, webhooks
from store.billing.runtime import Billing, billing_of
from store.errors import NotFound, StoreError
from store.observability import metrics

log = logging.getLogger("store.billing")

router = APIRouter(include_in_schema=False)


def _error(exc: StoreError) -> JSONResponse:
    return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=exc.status_code)


def _process(request: Request, billing: Billing, event: dict[str, Any]) -> webhooks.Result:
    session: Session = request.app.state.sessionmaker()
    try:
        session.info.setdefault("keyring", request.app.state.keyring)
        session.info.setdefault("settings", request.app.state.settings)
        result = webhooks.process_event(session, billing, event)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    if result.status == "processed":
        sweep.maybe_sweep(request.app.state.sessionmaker, billing)
    return result


@router.post("/billing/stripe/webhook")
async def stripe_webhook(request: Request) -> JSONResponse:
    """Stripe webhook endpoint. 400 for a bad or stale signature or a malformed body; 200 for
    processed, duplicate and ignored events; 503 when the event must be redelivered later."""
    billing = billing_of(request.app.state)
    secret = billing.settings.stripe_webhook_secret
    if not secret:
        return _error(NotFound("Stripe webhooks are not configured", code="webhooks_disabled"))
    body = await request.body()
    try:
        event = webhooks.verify(
            body,
            request.headers.get("stripe-signature"),
            secret=secret,
            tolerance=billing.settings.webhook_tolerance,
        )
    except webhooks.BadEvent as exc:
        log.info("webhook rejected: %s", exc.detail)
        metrics.webhook_event("unverified", exc.code)
        return _error(exc)
    try:
        result = await request.app.state.write_turns.run(_process, request, billing, event)
    except webhooks.RetryLater as exc:
        metrics.webhook_event(event["type"], exc.code)
        return _error(exc)
    metrics.webhook_event(result.event_type, result.status)
    return JSONResponse({"status": result.status, "event": result.event_id})
