"""Security headers on every response, from one place.

Pages load nothing from other origins and run no inline script: the Content-Security-Policy
allows scripts, styles and frames of the store only (images from https too: listings show
publisher logos), and nobody may frame the store. A response that sets a header itself
keeps it (the Stripe checkout pages add js.stripe.com to their own policy, see
``store.billing.pages.STRIPE_CSP``). The API's Swagger UI (``/api/docs``) loads its
scripts from a CDN and has one inline script: its policy names that CDN and the script's
hash, computed from the page itself. HSTS is sent only when the public URL is https.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

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
DOCS_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def headers_for(hsts: bool) -> dict[str, str]:
    """The headers every response carries (HSTS only behind TLS)."""
    return {**SECURITY_HEADERS, **({"Strict-Transport-Security": HSTS} if hsts else {})}


def docs_csp(html: bytes) -> str:
    """The policy of the Swagger UI page: its CDN and the hashes of its inline scripts."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {DOCS_CDN} {hashes}; "
        f"style-src 'self' {DOCS_CDN}; img-src 'self' data: https:; object-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


class SecurityHeadersMiddleware:
    """Pure ASGI (no response buffering but on the docs page): the token endpoint pays a
    list append per response."""

    def __init__(self, app: ASGIApp, *, hsts: bool, docs_path: str | None = None) -> None:
        self.app = app
        self.raw = [(k.lower().encode(), v.encode()) for k, v in headers_for(hsts).items()]
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.docs_path and scope["path"] == self.docs_path:
            await self._docs(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = self._add(list(message.get("headers", ())))
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _add(self, headers: list[Any], csp: bytes | None = None) -> list[Any]:
        present = {name.lower() for name, _ in headers}
        for name, value in self.raw:
            if name not in present:
                if csp is not None and name == b"content-security-policy":
                    value = csp
                headers.append((name, value))
        return headers

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffer(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            start["headers"] = self._add(list(start.get("headers", ())), docs_csp(body).encode())
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffer)


def install(app: Any) -> None:
    """Add the middleware to a FastAPI app (called once from ``create_app``)."""
    settings = app.state.settings
    hsts = settings.public_url.startswith("https://")
    app.add_middleware(SecurityHeadersMiddleware, hsts=hsts, docs_path=app.docs_url)
    # The response to an unhandled exception is sent by Starlette's outermost middleware,
    # outside this one: its handler adds these itself (store.http_errors).
    app.state.error_headers = headers_for(hsts)
