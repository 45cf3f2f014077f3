"""The JSON API through HTTP: status codes, the one error shape, and the main flows."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.mail.models import OutboxMessage
from tests.factories import (
    PASSWORD,
    api_token,
    auth,
    make_account,
    make_admin,
    make_org,
    make_product,
)


def _signup(client: TestClient, username: str) -> str:
    r = client.post(
        "/api/v1/accounts",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/auth/token", json={"login": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"].startswith("stp_") and sorted(body["scopes"]) == ["api", "pull"]
    return str(body["token"])


def test_publisher_and_customer_flow(client: TestClient, session: Session) -> None:
    pub = _signup(client, "publisher")
    cust = _signup(client, "customer")
    r = client.post("/api/v1/orgs", json={"slug": "acme", "name": "Acme"}, headers=auth(pub))
    assert r.status_code == 201 and r.json()["verified"] is False
    r = client.post(
        "/api/v1/orgs/acme/products",
        json={
            "slug": "redis-ha",
            "title": "Redis HA",
            "kind": "image",
            "categories": ["databases"],
            "description_md": "**fast** <script>x</script>",
        },
        headers=auth(pub),
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "draft"
    assert "<strong>fast</strong>" in r.json()["description_html"]
    assert "<script>" not in r.json()["description_html"]
    # Drafts do not leak.
    assert client.get("/api/v1/products/acme/redis-ha").status_code == 404
    assert client.get("/api/v1/products/acme/redis-ha", headers=auth(cust)).status_code == 404
    r = client.post(
        "/api/v1/products/acme/redis-ha/status", json={"status": "published"}, headers=auth(pub)
    )
    assert r.status_code == 409 and r.json()["error"] == "no_tiers"
    for tier in (
        {"slug": "community", "billing": "free"},
        {"slug": "pro", "billing": "month", "amount_minor": 4900, "trial_days": 14, "seats": 5},
    ):
        r = client.post("/api/v1/products/acme/redis-ha/tiers", json=tier, headers=auth(pub))
        assert r.status_code == 201, r.text
    # Publishing needs a confirmed address: the link mailed at sign-up confirms it.
    r = client.post(
        "/api/v1/products/acme/redis-ha/status", json={"status": "published"}, headers=auth(pub)
    )
    assert r.status_code == 403 and r.json()["error"] == "email_unverified"
    [link] = session.scalars(
        select(OutboxMessage.text_body).where(
            OutboxMessage.template == "verify_email",
            OutboxMessage.to_addr == "publisher@example.com",
        )
    )
    match = re.search(r"/verify-email/(\S+)", link)
    assert match
    r = client.post("/api/v1/verify-email", json={"token": match.group(1)})
    assert r.status_code == 200 and r.json()["email_verified_at"]
    r = client.post(
        "/api/v1/products/acme/redis-ha/status", json={"status": "published"}, headers=auth(pub)
    )
    assert r.status_code == 200 and r.json()["published_at"]
    r = client.get("/api/v1/products", params={"category": "databases"})
    assert [p["repository"] for p in r.json()["items"]] == ["acme/redis-ha"]
    assert [t["slug"] for t in r.json()["items"][0]["tiers"]] == ["community", "pro"]

    # A customer gets the free tier; the paid one needs payment.
    r = client.post("/api/v1/products/acme/redis-ha/tiers/pro/get", headers=auth(cust))
    assert r.status_code == 402 and r.json()["error"] == "tier_not_free"
    r = client.get("/api/v1/products/acme/redis-ha/access", headers=auth(cust))
    assert r.json()["allowed"] is False and r.json()["reason"] == "no_license"
    assert r.json()["product_url"] == "http://store.test/products/acme/redis-ha"
    r = client.post("/api/v1/products/acme/redis-ha/tiers/community/get", headers=auth(cust))
    assert r.status_code == 201 and r.json()["effective_status"] == "active"
    entitlement_id = r.json()["id"]
    assert client.get("/api/v1/products/acme/redis-ha/access", headers=auth(cust)).json()["allowed"]
    mine = client.get("/api/v1/me/entitlements", headers=auth(cust)).json()
    assert [e["id"] for e in mine] == [entitlement_id]
    assert mine[0]["holder"] == "user:customer"

    # The publisher sees and revokes; the customer cannot revoke.
    customers = client.get("/api/v1/products/acme/redis-ha/entitlements", headers=auth(pub)).json()
    assert [e["id"] for e in customers] == [entitlement_id]
    r = client.post(
        f"/api/v1/entitlements/{entitlement_id}/revoke", json={"reason": "x"}, headers=auth(cust)
    )
    assert r.status_code == 403
    r = client.post(
        f"/api/v1/entitlements/{entitlement_id}/revoke", json={"reason": "abuse"}, headers=auth(pub)
    )
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    r = client.get("/api/v1/products/acme/redis-ha/access", headers=auth(cust))
    assert r.json()["reason"] == "revoked"


def test_error_shape_and_status_codes(client: TestClient, session: Session) -> None:
    account = make_account(session, "someone")
    token = api_token(session, account)
    cases = [
        (client.get("/api/v1/me"), 401, "authentication_required"),
        (client.get("/api/v1/me", headers=auth("stp_nonsense")), 401, "bad_token"),
        (
            client.get("/api/v1/me", headers=auth(api_token(session, account, ("pull",)))),
            403,
            "insufficient_scope",
        ),
        (client.get("/api/v1/orgs/nope"), 404, "not_found"),
        (client.get("/api/v1/products", params={"pricing": "cheap"}), 422, "invalid"),
        (client.get("/api/v1/products", params={"per_page": 1000}), 422, "invalid"),
        (client.post("/api/v1/accounts", json={"username": "x"}), 422, "invalid"),
        (
            client.post(
                "/api/v1/accounts",
                content=b"{not json",
                headers={"content-type": "application/json"},
            ),
            422,
            "invalid",
        ),
        (
            client.post("/api/v1/orgs", json={"slug": "Bad!", "name": "x"}, headers=auth(token)),
            422,
            "invalid",
        ),
        (
            client.post(
                "/api/v1/auth/token", json={"login": "someone", "password": "wrong password"}
            ),
            401,
            "bad_credentials",
        ),
        (client.get("/api/v1/admin/accounts", headers=auth(token)), 403, "forbidden"),
        (client.get("/api/v1/entitlements/not-a-uuid", headers=auth(token)), 422, "invalid"),
        (client.delete("/api/v1/products"), 405, "method_not_allowed"),
        (client.get("/api/v1/no/such/route"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        body = response.json()
        assert body["error"] == code, (response.request.url, body)
        assert isinstance(body["detail"], str) and body["detail"]


def test_errors_name_their_field(client: TestClient, session: Session) -> None:
    """A refused input is named in the body as the request named it; an error about no one
    input has no field."""
    owner = make_account(session, "fieldowner")
    org = make_org(session, owner, "fields")
    make_product(session, org, owner, "app", publish=False)
    token = api_token(session, owner)
    cases = [
        (
            client.post("/api/v1/orgs", json={"slug": "Bad!", "name": "x"}, headers=auth(token)),
            "slug",
        ),
        (
            client.post("/api/v1/orgs", json={"slug": "fields", "name": "x"}, headers=auth(token)),
            "slug",
        ),
        (
            client.post("/api/v1/orgs", json={"slug": "other", "name": " "}, headers=auth(token)),
            "name",
        ),
        (
            client.post(
                "/api/v1/accounts",
                json={"username": "fieldowner", "email": "n@example.com", "password": PASSWORD},
            ),
            "username",
        ),
        (
            client.post(
                "/api/v1/accounts",
                json={"username": "newname", "email": "n@example.com", "password": "short"},
            ),
            "password",
        ),
        (
            client.post(
                "/api/v1/products/fields/app/tiers",
                json={"slug": "pro", "billing": "free", "amount_minor": 100, "currency": "usd"},
                headers=auth(token),
            ),
            "amount_minor",
        ),
        (
            client.post(
                "/api/v1/products/fields/app/tiers",
                json={"slug": "pro", "billing": "weekly"},
                headers=auth(token),
            ),
            "billing",
        ),
    ]
    for response, field in cases:
        assert response.status_code in (409, 422), (response.request.url, response.text)
        assert response.json().get("field") == field, (response.request.url, response.json())
    r = client.get("/api/v1/orgs/nope")
    assert r.status_code == 404 and "field" not in r.json()


def test_conflicts(client: TestClient, session: Session) -> None:
    owner = make_account(session, "owner1")
    make_org(session, owner, "taken")
    token = api_token(session, owner)
    r = client.post("/api/v1/orgs", json={"slug": "taken", "name": "x"}, headers=auth(token))
    assert (r.status_code, r.json()["error"]) == (409, "namespace_taken")
    r = client.post(
        "/api/v1/accounts",
        json={"username": "owner1", "email": "n@example.com", "password": PASSWORD},
    )
    assert (r.status_code, r.json()["error"]) == (409, "username_taken")


def test_tokens_api(client: TestClient, session: Session) -> None:
    owner = make_account(session, "tokenowner")
    org = make_org(session, owner, "tokorg")
    token = api_token(session, owner)
    r = client.post(
        "/api/v1/me/tokens",
        json={"name": "laptop", "scopes": ["pull", "push"], "expires_in_days": 30},
        headers=auth(token),
    )
    assert r.status_code == 201 and r.json()["token"].startswith("stp_")
    created = r.json()
    listed = client.get("/api/v1/me/tokens", headers=auth(token)).json()
    assert created["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed)  # the secret is never shown again
    r = client.delete(f"/api/v1/me/tokens/{created['id']}", headers=auth(token))
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.post(
        "/api/v1/orgs/tokorg/tokens", json={"name": "ci", "scopes": ["push"]}, headers=auth(token)
    )
    assert r.status_code == 201 and r.json()["token"].startswith("str_")
    robot_id = r.json()["id"]
    r = client.post(
        "/api/v1/orgs/tokorg/tokens", json={"name": "ci", "scopes": ["api"]}, headers=auth(token)
    )
    assert r.status_code == 422
    # A stranger cannot see or revoke the organization's robots.
    stranger = api_token(session, make_account(session, "stranger"))
    assert client.get("/api/v1/orgs/tokorg/tokens", headers=auth(stranger)).status_code == 403
    assert (
        client.delete(f"/api/v1/orgs/tokorg/tokens/{robot_id}", headers=auth(stranger)).status_code
        == 403
    )
    assert client.delete(f"/api/v1/me/tokens/{robot_id}", headers=auth(token)).status_code == 404
    assert org.slug == "tokorg"


def test_members_and_invitations_api(client: TestClient, session: Session) -> None:
    owner = make_account(session, "boss")
    make_org(session, owner, "team")
    guest = make_account(session, "guest")
    owner_token, guest_token = api_token(session, owner), api_token(session, guest)
    r = client.post(
        "/api/v1/orgs/team/invitations",
        json={"username": "guest", "role": "editor"},
        headers=auth(owner_token),
    )
    assert r.status_code == 201
    invitations = client.get("/api/v1/me/invitations", headers=auth(guest_token)).json()
    assert [i["organization"]["slug"] for i in invitations] == ["team"]
    r = client.post(
        f"/api/v1/me/invitations/{invitations[0]['id']}/accept", headers=auth(guest_token)
    )
    assert r.status_code == 200
    members = client.get("/api/v1/orgs/team/members", headers=auth(guest_token)).json()
    assert {(m["username"], m["role"]) for m in members} == {("boss", "owner"), ("guest", "editor")}
    r = client.put(
        "/api/v1/orgs/team/members/guest", json={"role": "owner"}, headers=auth(guest_token)
    )
    assert r.status_code == 403
    r = client.put(
        "/api/v1/orgs/team/members/guest", json={"role": "viewer"}, headers=auth(owner_token)
    )
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    r = client.delete("/api/v1/orgs/team/members/guest", headers=auth(guest_token))
    assert r.status_code == 204
    me = client.get("/api/v1/me", headers=auth(guest_token)).json()
    assert me["organizations"] == []


def test_admin_api(client: TestClient, session: Session) -> None:
    admin = make_admin(session)
    owner = make_account(session, "pubowner")
    org = make_org(session, owner, "verifyme")
    product = make_product(session, org, owner, "thing")
    token = api_token(session, admin)
    r = client.post(
        "/api/v1/admin/orgs/verifyme/verification",
        json={"verified": True, "note": "ok"},
        headers=auth(token),
    )
    assert r.status_code == 200 and r.json()["verified"] is True
    r = client.post(
        f"/api/v1/products/{product.repository}/badges",
        json={"official": True},
        headers=auth(token),
    )
    assert r.status_code == 200 and r.json()["official"] and not r.json()["certified"]
    r = client.post(
        f"/api/v1/products/{product.repository}/badges",
        json={"certified": True},
        headers=auth(token),
    )
    assert (r.status_code, r.json()["error"]) == (409, "certify_through_review")
    r = client.get("/api/v1/products", params={"badge": "verified"})
    assert [p["repository"] for p in r.json()["items"]] == ["verifyme/thing"]
    r = client.post(
        f"/api/v1/products/{product.repository}/status",
        json={"status": "suspended", "reason": "abuse"},
        headers=auth(token),
    )
    assert r.status_code == 200
    assert client.get(f"/api/v1/products/{product.repository}").status_code == 404
    r = client.get("/api/v1/products", params={"status": "suspended"}, headers=auth(token))
    assert [p["repository"] for p in r.json()["items"]] == ["verifyme/thing"]
    r = client.patch(
        "/api/v1/admin/accounts/pubowner", json={"is_active": False}, headers=auth(token)
    )
    assert r.status_code == 200 and r.json()["is_active"] is False


def test_grant_api(client: TestClient, session: Session) -> None:
    owner = make_account(session, "granter")
    org = make_org(session, owner, "grants")
    make_product(
        session,
        org,
        owner,
        "app",
        tiers=[{"slug": "pro", "billing": "year", "amount_minor": 10000}],
    )
    make_account(session, "lucky")
    token = api_token(session, owner)
    body = {
        "repository": "grants/app",
        "tier": "pro",
        "username": "lucky",
        "ends_at": "2030-01-01T00:00:00Z",
    }
    r = client.post("/api/v1/entitlements", json=body, headers=auth(token))
    assert (
        r.status_code == 201
        and r.json()["source"] == "grant"
        and r.json()["ends_at"].startswith("2030")
    )
    r = client.post(
        "/api/v1/entitlements", json={**body, "organization": "grants"}, headers=auth(token)
    )
    assert r.status_code == 422
    for far in ("9999-12-31T23:59:59Z", "3000-01-01T00:00:00Z", "0001-01-01T00:00:00Z"):
        r = client.post("/api/v1/entitlements", json={**body, "ends_at": far}, headers=auth(token))
        assert r.status_code == 422, (far, r.status_code, r.text)
        assert r.json()["error"] in ("out_of_range", "invalid")
    # Listings filtered by far-away dates answer, they do not fail.
    for query in ("since=9999-12-31T23:59:59Z", "until=0001-01-01T00:00:00Z"):
        r = client.get(f"/api/v1/billing/sales/grants?{query}", headers=auth(token))
        assert r.status_code in (200, 422), (query, r.status_code, r.text)
    r = client.post(
        "/api/v1/entitlements", json={**body, "ends_at": "2030-01-01T00:00:00"}, headers=auth(token)
    )
    assert r.status_code == 422 and "time zone" in r.json()["detail"]
    r = client.post("/api/v1/entitlements", json={**body, "tier": "nope"}, headers=auth(token))
    assert r.status_code == 404


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/products" in schema["paths"]
    assert "/api/v1/products/{org}/{name}/access" in schema["paths"]
    assert schema["info"]["title"] == "Store"


def test_text_the_database_cannot_store_is_a_422(client: TestClient, session: Session) -> None:
    """PostgreSQL text cannot hold NUL characters: the store answers 422, never a 500, and
    the request changed nothing (SQLite stores them)."""
    owner = make_account(session, "nulowner")
    token = api_token(session, owner)
    # A name refuses every control character, NUL included, on either database.
    r = client.post(
        "/api/v1/me/tokens", json={"name": "lap\u0000top", "scopes": ["pull"]}, headers=auth(token)
    )
    assert (r.status_code, r.json()["error"]) == (422, "control_characters"), r.text
    # Text of several lines (a README) is stored as typed where the database can.
    r = client.post(
        "/api/v1/repositories",
        json={"name": "nulowner/app", "readme": "lap\u0000top"},
        headers=auth(token),
    )
    if session.get_bind().dialect.name == "postgresql":
        assert r.status_code == 422, r.text
        assert r.json() == {
            "error": "invalid",
            "detail": "Text cannot contain NUL (0x00) characters",
        }
        listed = client.get("/api/v1/me/tokens", headers=auth(token))
        assert listed.status_code == 200 and [t["name"] for t in listed.json()] == ["tests"]
        assert (
            client.get("/api/v1/repositories/nulowner/app", headers=auth(token)).status_code == 404
        )
    else:
        assert r.status_code == 201, r.text


def test_revenue_is_for_owners_and_the_finance_role(client: TestClient, session: Session) -> None:
    from store.accounts import service as accounts
    from store.registry.grants import Principal, RepoFacts, allowed_repository_actions

    owner = make_account(session, "rev-owner")
    org = make_org(session, owner, "revco")
    admin = make_account(session, "rev-admin", is_admin=True)
    roles = {}
    for role in ("viewer", "finance", "editor"):
        member = make_account(session, f"rev-{role}")
        accounts.add_member(session, org=org, actor=admin, account=member, role=role)
        roles[role] = api_token(session, member)
    roles["owner"] = api_token(session, owner)
    session.commit()
    for role, token in roles.items():
        r = client.get("/api/v1/billing/sales/revco", headers=auth(token))
        expected = 200 if role in ("owner", "finance") else 403
        assert r.status_code == expected, (role, r.status_code, r.text)
    # finance is a member like a viewer otherwise: pulls, never pushes or edits.
    finance = accounts.get_account_by_username(session, "rev-finance")
    assert accounts.has_role(session, finance, org, "viewer")
    assert not accounts.has_role(session, finance, org, "editor")
    principal = Principal(kind="account", subject="rev-finance", account_id=finance.id)
    facts = RepoFacts(name="revco/app", org_id=org.id, role="finance")
    assert allowed_repository_actions(principal, facts) == {"pull"}


def test_a_token_made_with_a_token_never_exceeds_it(client: TestClient, session: Session) -> None:
    """A leaked `api` token cannot mint push rights or outlive itself: a personal or robot
    token created through the API has at most the scopes of the token used, and expires no
    later than it."""
    from store.accounts import service as accounts_service
    from store.db import utcnow

    owner = make_account(session, "boundowner")
    make_org(session, owner, "boundorg")
    expires = utcnow() + timedelta(days=1)
    limited = accounts_service.create_token(
        session,
        kind="personal",
        name="dashboard",
        scopes=["api", "pull"],
        created_by=owner,
        expires_at=expires,
    ).secret
    session.commit()
    for path, scopes in (
        ("/api/v1/me/tokens", ["pull", "push"]),
        ("/api/v1/me/tokens", ["api", "push"]),
        ("/api/v1/orgs/boundorg/tokens", ["push"]),
    ):
        r = client.post(path, json={"name": "more", "scopes": scopes}, headers=auth(limited))
        assert r.status_code == 403, (path, scopes, r.text)
        assert r.json()["error"] == "insufficient_scope" and r.json()["field"] == "scopes"
    for path in ("/api/v1/me/tokens", "/api/v1/orgs/boundorg/tokens"):
        r = client.post(
            path,
            json={"name": "less", "scopes": ["pull"], "expires_in_days": 365},
            headers=auth(limited),
        )
        assert r.status_code == 201, r.text
        made = datetime.fromisoformat(r.json()["expires_at"])
        assert made <= expires
    # A token without an expiry (and every scope) makes what it asks for.
    full = api_token(session, owner)
    r = client.post(
        "/api/v1/me/tokens", json={"name": "ci", "scopes": ["pull", "push"]}, headers=auth(full)
    )
    assert r.status_code == 201 and r.json()["expires_at"] is None


def test_a_token_made_with_a_token_dies_with_it(client: TestClient, session: Session) -> None:
    """Revoking a token revokes every token made with it through the API (personal and
    robot), and theirs, to any depth; tokens made otherwise are left alone."""
    import base64

    from store.accounts import service as accounts_service

    owner = make_account(session, "treeowner")
    make_org(session, owner, "treeorg")
    parent = accounts_service.create_token(
        session, kind="personal", name="root", scopes=["api", "pull", "push"], created_by=owner
    )
    other = api_token(session, owner)
    session.commit()

    def made(path: str, token: str, scopes: list[str]) -> dict[str, Any]:
        r = client.post(path, json={"name": "made", "scopes": scopes}, headers=auth(token))
        assert r.status_code == 201, r.text
        return r.json()

    child = made("/api/v1/me/tokens", parent.secret, ["api", "pull"])
    grandchild = made("/api/v1/me/tokens", child["token"], ["api", "pull"])
    robot = made("/api/v1/orgs/treeorg/tokens", parent.secret, ["pull"])
    sibling = made("/api/v1/me/tokens", other, ["api", "pull"])

    def pulls(secret: str, user: str) -> int:
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return client.get(
            "/token",
            params={"service": "store-registry", "scope": "repository:treeorg/app:pull"},
            headers={"Authorization": f"Basic {basic}"},
        ).status_code

    for secret in (child["token"], grandchild["token"], sibling["token"]):
        assert client.get("/api/v1/me", headers=auth(secret)).status_code == 200
    assert pulls(robot["token"], "robot") == 200
    r = client.delete(f"/api/v1/me/tokens/{parent.token.id}", headers=auth(other))
    assert r.status_code == 200, r.text
    for secret in (child["token"], grandchild["token"]):
        assert client.get("/api/v1/me", headers=auth(secret)).status_code == 401
        assert pulls(secret, "treeowner") == 401
    assert pulls(robot["token"], "robot") == 401
    assert client.get("/api/v1/me", headers=auth(sibling["token"])).status_code == 200
    assert client.get("/api/v1/me", headers=auth(other)).status_code == 200
