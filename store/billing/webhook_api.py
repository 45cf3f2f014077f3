"""``POST /billing/stripe/webhook``: Stripe's events, verified and applied exactly once."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio.from_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from store.billing import reconcile, sweep, webhooks
from store.billing.models import Order
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


def _catch_up(request: Request, billing: Billing, order_id: uuid.UUID) -> Order | None:
    session: Session = request.app.state.sessionmaker()
    try:
        changed = reconcile.order_status_refresh(session, billing, order_id)
        session.commit()
        if not changed:
            return None
        order = session.get(Order, order_id)
        assert order is not None
        session.refresh(order)
        session.expunge(order)
        return order
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def catch_up(request: Request, billing: Billing, order: Order) -> Order | None:
    """For pages and API reads of an unpaid order (read-only requests): ask the gateway and
    fulfil through the webhook handlers, in a writing unit of work of its own taken in this
    process's write turn. The order as it is now if that changed it (detached), else None."""
    if order.status not in reconcile.UNPAID or order.gateway != billing.gateway.name:
        return None
    if billing.test_mode:
        return None  # the test gateway's events are applied in the checkout itself
    try:
        result: Order | None = anyio.from_thread.run(
            request.app.state.write_turns.run, _catch_up, request, billing, order.id
        )
    except StoreError as exc:
        log.warning("could not catch up order %s: %s", order.id, exc.detail)
        return None
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
