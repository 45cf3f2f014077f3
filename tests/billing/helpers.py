"""Helpers for billing tests: settings, hand-signed Stripe events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from fastapi.testclient import TestClient

from store.billing.config import BillingSettings

WEBHOOK_SECRET = "whsec_test_billing_secret"


def billing_settings(**overrides: Any) -> BillingSettings:
    values: dict[str, Any] = {
        "stripe_secret_key": None,
        "stripe_publishable_key": None,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "gateway": "test",
        "grace_days": 7,
        "webhook_tolerance": 300,
        "tax_rate_bps": 0,
        "sweep_interval_seconds": 0,
    }
    values.update(overrides)
    return BillingSettings(_env_file=None, **values)  # type: ignore[call-arg]


def sign(payload: str, secret: str = WEBHOOK_SECRET, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def make_event(
    type_: str, obj: dict[str, Any], *, created: int | None = None, id_: str | None = None
) -> dict[str, Any]:
    return {
        "id": id_ or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": type_,
        "created": int(time.time()) if created is None else created,
        "api_version": "2026-10-28.endive",
        "livemode": False,
        "data": {"object": obj},
    }


def post_event(
    client: TestClient,
    event: dict[str, Any] | str,
    *,
    secret: str = WEBHOOK_SECRET,
    t: int | None = None,
    signature: str | None = None,
) -> Any:
    body = event if isinstance(event, str) else json.dumps(event, indent=2)
    header = signature if signature is not None else sign(body, secret, t)
    return client.post(
        "/billing/stripe/webhook",
        content=body.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
