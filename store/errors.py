"""Domain errors, and the one place that maps them to HTTP."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base of every error a user can cause; carries an HTTP status and a stable code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class ValidationFailed(StoreError):
    status_code = 422
    code = "invalid"


class Unauthorized(StoreError):
    status_code = 401
    code = "unauthorized"


class Forbidden(StoreError):
    status_code = 403
    code = "forbidden"


class NotFound(StoreError):
    status_code = 404
    code = "not_found"


class Conflict(StoreError):
    status_code = 409
    code = "conflict"


class PaymentRequired(StoreError):
    status_code = 402
    code = "payment_required"


class TooManyRequests(StoreError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(StoreError):
    """A service the store depends on (the registry, the payment gateway) did not answer."""

    status_code = 503
    code = "unavailable"
