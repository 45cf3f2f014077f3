"""Security headers on every kind of response, cookie flags, and CSRF on every form."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from store.app import create_app
from store.config import Settings
from store.security_headers import CSP
from store.web.pages import SESSION_COOKIE
from tests.factories import make_admin
from tests.web.helpers import HTML, login

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Machine endpoints: authenticated by tokens or signatures, never by the browser's cookie.
# /mail/unsubscribe/: RFC 8058 one-click unsubscribe, posted by mail clients with no session;
# the signed token in the path is the authority (tests/mail/test_mail_pages.py).
NOT_FORMS = (
    "/api/",
    "/token",
    "/registry/",
    "/billing/stripe/webhook",
    "/v1/",
    "/v2/",
    "/mail/unsubscribe/",
)


def _https_app(settings: Settings, session_factory: sessionmaker[Session]) -> FastAPI:
    app = create_app(
        settings.model_copy(update={"public_url": "https://store.test"}), migrate=False
    )
    app.state.engine.dispose()
    app.state.sessionmaker = session_factory
    return app


@pytest.fixture
def https_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    with TestClient(_https_app(settings, session_factory), base_url="https://store.test") as c:
        yield c


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/", HTML),
        ("/login", HTML),
        ("/nowhere-at-all", HTML),  # an HTML error page
        ("/api/v1/orgs", {}),
        ("/api/v1/nothing-here", {}),  # a JSON error
        ("/token", {}),  # the registry's plain Starlette route
        ("/static/store.css", {}),
    ],
)
def test_every_response_has_the_headers(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)
    assert response.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP
    assert "frame-ancestors 'none'" in CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert "camera=()" in response.headers["permissions-policy"]
    assert "strict-transport-security" not in response.headers  # http public URL


def test_headers_are_not_duplicated(client: TestClient) -> None:
    response = client.get("/", headers=HTML)
    assert len(response.headers.get_list("content-security-policy")) == 1


def test_hsts_only_behind_tls(https_client: TestClient) -> None:
    response = https_client.get("/api/v1/orgs")
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_api_docs_are_the_stores_own_page_under_its_usual_policy(client: TestClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CSP
    assert not re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", response.text)  # no inline script
    sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
    assert sources and all(s.startswith("/static/") for s in sources), sources
    for source in sources:
        assert client.get(source).status_code == 200, source
    favicon = client.get("/favicon.ico")
    assert favicon.status_code == 200
    assert favicon.headers["content-type"] == "image/vnd.microsoft.icon"
    assert favicon.content.startswith(b"\x00\x00\x01\x00")  # an ICO header


def _session_cookie(response) -> str:  # type: ignore[no-untyped-def]
    cookies = [h for r in [*response.history, response] for h in r.headers.get_list("set-cookie")]
    return next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))


def test_session_cookie_flags_over_http(client: TestClient, session: Session) -> None:
    make_admin(session, "flags-http")
    client.headers.update(HTML)
    cookie = _session_cookie(login(client, "flags-http")).lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie.replace("samesite", "")


def test_session_cookie_is_secure_behind_tls(https_client: TestClient, session: Session) -> None:
    make_admin(session, "flags-https")
    https_client.headers.update(HTML)
    cookie = _session_cookie(login(https_client, "flags-https")).lower()
    assert "; secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


# --- CSRF on every state-changing page route -----------------------------------------------------


def _unsafe_page_routes(app: FastAPI) -> list[tuple[str, str]]:
    from fastapi.routing import _iter_routes_with_context  # FastAPI ≥ 0.16x nests routers

    found = []
    for route, ctx in _iter_routes_with_context(app.routes):
        path = ctx.path if ctx is not None else getattr(route, "path", "")
        methods = (ctx.methods if ctx is not None else getattr(route, "methods", None)) or set()
        if path.startswith(NOT_FORMS) or "webhook" in path:
            continue
        found.extend((method, path) for method in sorted(methods & UNSAFE))
    return found


def _concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return str(uuid.uuid4()) if name.endswith("id") else "x"

    return re.sub(r"\{([^}]+)\}", value, path)


def test_every_form_route_rejects_a_missing_csrf_token(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    routes = _unsafe_page_routes(app)
    assert len(routes) >= 25, routes  # the walk found the page routes
    make_admin(session, "csrf-admin")
    client.headers.update(HTML)
    login(client, "csrf-admin")  # a logged-in administrator: only CSRF can refuse
    for method, path in routes:
        url = _concrete(path)
        for data in ({}, {"csrf_token": "forged"}):
            response = client.request(method, url, data=data, follow_redirects=False)
            assert response.status_code == 403, (method, path, response.status_code)
            assert "expired or was sent from another site" in response.text, (method, path)
