"""Bounded request bodies: a body over its cap is refused with 413 before it is read.

Every request body is limited (``STORE_MAX_BODY_BYTES``, 1 MiB by default); a few paths
have caps of their own (``BODY_LIMITS``: the Stripe webhook less, the registry's
notification envelopes more). A declared ``Content-Length`` over the cap is answered at
once, without reading a byte of the body; a body without one (chunked) is counted as it
streams in, and the read that passes the cap raises :class:`BodyTooLarge` (a 413), so no
route ever holds more than the cap in memory. The middleware sits outside the routes and
the session; its own 413 is the store's usual error (JSON, or a page for browsers).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("store.requests")

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_BODY = 1 * MIB
# Paths whose bodies have a cap of their own (exact paths).
BODY_LIMITS: dict[str, int] = {
    # Stripe events are a few KiB; the signature is checked only once the body is read.
    "/billing/stripe/webhook": 512 * KIB,
    # The registry batches notifications (store.registry.routes.MAX_EVENTS_BYTES).
    "/registry/events": 4 * MIB,
}


class BodyTooLarge(HTTPException):
    """A request body over its cap (HTTP 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {_size(limit)}")
        self.limit = limit


def _size(n: int) -> str:
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"


def _content_length(scope: Scope) -> int | None:
    """The declared length; -1 when the header is malformed, None when absent."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() and len(text) < 20 else -1
    return None


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, default: int = DEFAULT_MAX_BODY, limits: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default = default
        self.limits = dict(BODY_LIMITS if limits is None else limits)

    def limit_for(self, path: str) -> int:
        return self.limits.get(path, self.default)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """(status, code, detail) when the declared length alone refuses the request."""
        declared = _content_length(scope)
        if declared is None:
            return None
        if declared == -1:
            return 400, "bad_request", "Malformed Content-Length header"
        limit = self.limit_for(scope["path"])
        if declared > limit:
            return 413, "too_large", str(BodyTooLarge(limit).detail)
        return None

    def counted(self, scope: Scope, receive: Receive) -> Receive:
        """``receive`` that raises BodyTooLarge once the body read passes the cap."""
        limit = self.limit_for(scope["path"])
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted_receive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await refuse(scope, send, *refusal)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, self.counted(scope, receive), tracked_send)
        except BodyTooLarge as exc:
            # Raised where no handler turns it into a response (a plain route): answer here.
            if started:
                raise
            await refuse(scope, send, 413, "too_large", str(exc.detail))


async def refuse(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    """Answer a request whose body is not read (the connection is closed after it)."""
    from store.http_errors import error_response

    request = Request(scope)
    # The body is not read: the connection cannot be reused for another request.
    response = error_response(request, status, code, detail, headers={"Connection": "close"})
    log.info("refused a %s body on %s %s", code, scope.get("method"), scope.get("path"))

    async def no_body() -> Message:
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


def install(app: Any) -> None:
    """Add the middleware (inside the security headers, outside the fast path and the
    session: see ``create_app``)."""
    app.add_middleware(BodyLimitMiddleware, default=app.state.settings.max_body_bytes)
