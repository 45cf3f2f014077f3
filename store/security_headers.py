"""Security headers on every response, from one place.

Pages load nothing from other origins and run no inline script: the Content-Security-Policy
allows scripts, styles and frames of the store only (images from https too: listings show
publisher logos), and nobody may frame the store. A response that sets a header itself
keeps it (the Stripe checkout pages add js.stripe.com to their own policy, see
``store.web.routes_billing.STRIPE_CSP``). The API's Swagger UI (``/api/docs``) is served from
the store's own files like every other page. HSTS is sent only when the public URL is
https.

Responses that carry a secret (a new token's secret, a license, a refresh token, a
two-factor secret or recovery codes) must never be kept by a browser or proxy cache: their
routes declare the :data:`NO_STORE` dependency, and this middleware then sends
``Cache-Control: no-store`` whatever the route set, on every status.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"
NO_STORE_FLAG = "store_no_store"


def no_store(request: Request) -> None:
    """Dependency of every route whose responses carry a secret: ``Cache-Control:
    no-store`` (set by :class:`SecurityHeadersMiddleware` on the way out)."""
    request.scope.setdefault("state", {})[NO_STORE_FLAG] = True


NO_STORE = Depends(no_store)


def carries_secrets(route: Any) -> bool:
    """Whether a route declares :data:`NO_STORE` (for the test that enumerates them)."""
    dependant = getattr(route, "dependant", None)
    stack = list(dependant.dependencies) if dependant is not None else []
    while stack:
        dep = stack.pop()
        if dep.call is no_store:
            return True
        stack.extend(dep.dependencies)
    return False


def headers_for(hsts: bool) -> dict[str, str]:
    """The headers every response carries (HSTS only behind TLS)."""
    return {**SECURITY_HEADERS, **({"Strict-Transport-Security": HSTS} if hsts else {})}


def raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI (lower-case name, value) pairs of ``headers``, encoded once."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def with_no_store(headers: list[Any]) -> list[Any]:
    """``headers`` with ``Cache-Control: no-store`` instead of any cache-control of theirs."""
    kept = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
    kept.append((b"cache-control", b"no-store"))
    return kept


class SecurityHeadersMiddleware:
    """Pure ASGI, no response buffering: a list extension per response."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.raw = raw_headers(headers_for(hsts))
        self.names = frozenset(name for name, _ in self.raw)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                state = scope.get("state")
                if isinstance(state, dict) and state.get(NO_STORE_FLAG):
                    headers = with_no_store(headers)
                message["headers"] = add(headers, self.raw, self.names)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add(headers: list[Any], raw: list[tuple[bytes, bytes]], names: frozenset[bytes]) -> list[Any]:
    """``headers`` extended by the ``raw`` headers (of ``names``) they do not set themselves."""
    if any(name.lower() in names for name, _ in headers):
        present = {name.lower() for name, _ in headers}
        headers.extend((name, value) for name, value in raw if name not in present)
    else:
        headers.extend(raw)
    return headers


def install(app: Any) -> None:
    """Add the middleware to a FastAPI app (called once from ``create_app``)."""
    settings = app.state.settings
    hsts = settings.public_url.startswith("https://")
    app.add_middleware(SecurityHeadersMiddleware, hsts=hsts)
    # The response to an unhandled exception is sent by Starlette's outermost middleware,
    # outside this one: its handler adds these itself (store.http_errors).
    app.state.error_headers = headers_for(hsts)
