"""Every response carrying a secret (a token's secret, a license, a refresh token, two-factor
secrets and recovery codes) says ``Cache-Control: no-store``: the routes are found by what
they return, and each must declare the NO_STORE dependency."""

from __future__ import annotations

import base64
import typing
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.fastpath import walk_routes
from store.security_headers import carries_secrets
from tests.factories import PASSWORD, make_account

# Field names that hold a secret in a response model.
SECRET_FIELDS = {"token", "secret", "refresh_token", "private_key", "recovery_codes"}
# Pages and files that show a secret (HTML or a download, no response model).
SECRET_PAGES = {
    ("POST", "/my/tokens"),  # a new personal token
    ("POST", "/publish/{org}/-/robots"),  # a new robot token
    ("GET", "/my/licenses/{entitlement_id}.lic"),
    ("GET", "/api/v1/entitlements/{entitlement_id}/license.lic"),
    ("GET", "/my/two-factor"),
    ("POST", "/my/two-factor/setup"),  # the TOTP secret and its QR code
    ("POST", "/my/two-factor/confirm"),  # recovery codes
    ("POST", "/my/two-factor/recovery-codes"),
    ("POST", "/login/two-factor"),
}


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _secret_fields(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    found = {name for name in model.model_fields if name in SECRET_FIELDS}
    for field in model.model_fields.values():
        for inner in _models(field.annotation):
            found |= _secret_fields(inner, seen)
    return found


def _routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    return [
        (method, prefix + route.path, route)
        for prefix, route in walk_routes(app.routes)
        if isinstance(route, APIRoute)
        for method in route.methods
    ]


def test_every_secret_bearing_route_declares_no_store(app: FastAPI) -> None:
    routes = _routes(app)
    secret = {
        (method, path)
        for method, path, route in routes
        if any(_secret_fields(m) for m in _models(route.response_model))
    }
    assert ("POST", "/api/v1/me/tokens") in secret
    assert ("GET", "/api/v1/entitlements/{entitlement_id}/license") in secret
    known = {(m, p) for m, p, _ in routes}
    assert known >= SECRET_PAGES, SECRET_PAGES - known  # the list follows the routes
    marked = {(m, p) for m, p, route in routes if carries_secrets(route)}
    missing = (secret | SECRET_PAGES) - marked
    assert not missing, f"secret-bearing routes without NO_STORE: {sorted(missing)}"


def test_secret_responses_say_no_store_on_every_status(
    client: TestClient, session: Session
) -> None:
    make_account(session, "alice")
    session.commit()
    created = client.post(
        "/api/v1/auth/token", json={"login": "alice", "password": PASSWORD, "token_name": "x"}
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    refused = client.post(
        "/api/v1/auth/token", json={"login": "alice", "password": "wrong", "token_name": "x"}
    )
    assert refused.status_code in (401, 422)
    assert refused.headers["cache-control"] == "no-store"
    bearer = {"Authorization": f"Bearer {created.json()['token']}"}
    new = client.post("/api/v1/me/tokens", json={"name": "y", "scopes": ["pull"]}, headers=bearer)
    assert new.status_code == 201 and new.headers["cache-control"] == "no-store"
    # A route without secrets is left alone (the marker is per request).
    listed = client.get("/api/v1/me/tokens", headers=bearer)
    assert listed.headers.get("cache-control") != "no-store"
    # The token endpoint (a plain route) sends it itself, refresh tokens included.
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    token = client.get(
        "/token",
        params={"service": "store-registry", "offline_token": "true"},
        headers={"Authorization": f"Basic {auth}"},
    )
    assert token.json()["refresh_token"]
    assert token.headers["cache-control"] == "no-store"


def test_license_responses_say_no_store(client: TestClient, session: Session, app: FastAPI) -> None:
    from tests.licensing.conftest import make_shop

    shop = make_shop(session)
    token = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=shop.customer
    ).secret
    session.commit()
    bearer = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/entitlements/{shop.entitlement.id}/license"
    for path in (base, f"{base}.lic"):
        response = client.get(path, headers=bearer)
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
