"""Domain errors, and the one place that maps them to HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class StoreError(Exception):
    """Base of every error a user can cause; carries an HTTP status and a stable code."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        field: str | Sequence[str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        # The input the error is about, by its API name (a form whose input is named
        # otherwise maps it: store.web.forms); several when the error is about their mix.
        self.field: str | tuple[str, ...] | None = (
            field if field is None or isinstance(field, str) else tuple(field)
        )
        self.extra = extra

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the error is about, in order (none when it is about no one input)."""
        if self.field is None:
            return ()
        return (self.field,) if isinstance(self.field, str) else self.field


class ValidationFailed(StoreError):
    """Input that is not acceptable; ``field`` names the input (or inputs) at fault."""

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
