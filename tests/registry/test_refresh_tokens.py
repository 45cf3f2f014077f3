"""Registry refresh tokens never exceed the log-in they came from: scopes, expiry, source
revocation, password change, disabled account, rotation with reuse detection; listed and
revocable in the API, the web page and the CLI."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts.models import AccessToken
from store.db import utcnow
from store.errors import ValidationFailed
from store.keys.service import KeyRing
from store.licensing import service as licensing
from store.registry import tokens
from tests.factories import PASSWORD, make_account, make_org, make_product, paid_tier
from tests.licensing.conftest import make_shop

SERVICE = "store-registry"
OWN = "repository:acme/app:pull,push"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def world(session: Session) -> dict[str, Any]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "app", tiers=[paid_tier()])
    make_product(
        session, acme, alice, "open", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )

    def token(scopes: list[str], days: int | None = None) -> str:
        expires = utcnow() + timedelta(days=days) if days else None
        return accounts.create_token(
            session,
            kind="personal",
            name="-".join(scopes),
            scopes=scopes,
            created_by=alice,
            expires_at=expires,
        ).secret

    world = {
        "alice": alice,
        "acme": acme,
        "api": token(["api"], days=1),
        "pull": token(["pull"], days=1),
        "push": token(["pull", "push"]),
        "robot": accounts.create_token(
            session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
        ).secret,
    }
    session.commit()
    return world


def login(client: TestClient, headers: dict[str, str], client_id: str = "docker") -> Any:
    return client.get(
        "/token",
        params={"service": SERVICE, "offline_token": "true", "client_id": client_id},
        headers=headers,
    )


def refresh(client: TestClient, secret: str, scope: str = OWN, **extra: str) -> Any:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": secret,
        "service": SERVICE,
        "client_id": "containers/image",
        "scope": scope,
        **extra,
    }
    return client.post("/token", data=form)


def access_of(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return tokens.decode_unverified(response.json()["token"])[1]["access"]


def row(session: Session, secret: str) -> AccessToken:
    session.expire_all()
    token = session.scalar(
        select(AccessToken).where(AccessToken.token_hash == security.hash_token(secret))
    )
    assert token is not None
    return token


def test_api_only_token_gets_no_registry_access_directly_or_by_refresh(
    client: TestClient, world: dict[str, Any]
) -> None:
    api = basic("alice", world["api"])
    response = login(client, api)
    assert response.status_code == 200
    assert "refresh_token" not in response.json()
    for scope in (OWN, "repository:acme/open:pull", "repository:acme/new:pull,push"):
        response = client.get("/token", params={"service": SERVICE, "scope": scope}, headers=api)
        assert response.status_code == 401 or access_of(response) == []


def test_refresh_from_a_pull_token_has_its_scopes_and_expiry(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    secret = login(client, basic("alice", world["pull"])).json()["refresh_token"]
    token = row(session, secret)
    source = row(session, world["pull"])
    assert token.kind == "refresh" and token.source_kind == "personal"
    assert token.source_token_id == source.id and token.scopes == ["pull"]
    assert source.expires_at is not None
    assert token.expires_at is not None and token.expires_at <= source.expires_at
    assert token.absolute_expires_at is not None and token.absolute_expires_at <= source.expires_at
    # alice owns acme (a password would push), but the log-in used a pull-only token.
    assert access_of(refresh(client, secret)) == [
        {"type": "repository", "name": "acme/app", "actions": ["pull"]}
    ]
    assert row(session, secret).expires_at <= source.expires_at  # sliding stays within


def test_refresh_from_a_password_pushes_like_the_password(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    secret = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    token = row(session, secret)
    assert token.source_kind == "password" and token.client == "docker"
    assert token.expires_at is not None and token.absolute_expires_at is not None
    assert token.expires_at - utcnow() <= timedelta(days=30)
    assert token.absolute_expires_at - utcnow() <= timedelta(days=90)
    assert access_of(refresh(client, secret)) == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}
    ]


def test_robots_keep_no_refresh_token(client: TestClient, world: dict[str, Any]) -> None:
    response = login(client, basic("ci", world["robot"]))
    assert response.status_code == 200 and "refresh_token" not in response.json()


def test_refresh_token_is_not_a_password(client: TestClient, world: dict[str, Any]) -> None:
    secret = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    response = client.get(
        "/token", params={"service": SERVICE, "scope": OWN}, headers=basic("alice", secret)
    )
    assert response.status_code == 401
    # ... and a refresh grant cannot mint a new log-in of its own (no rotation asked).
    assert "refresh_token" not in refresh(client, secret, offline_token="false").json()


def test_revoking_the_source_token_kills_the_refresh_token(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    secret = login(client, basic("alice", world["push"])).json()["refresh_token"]
    assert access_of(refresh(client, secret))
    source = row(session, world["push"])
    accounts.revoke_token(session, token=source, actor=world["alice"])
    session.commit()
    response = refresh(client, secret)
    assert response.status_code == 401
    assert response.headers["www-authenticate"]
    assert row(session, secret).revoked_at is not None


def test_source_revoked_behind_the_services_back_is_still_refused(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    """The use re-checks the source itself (a revocation written by another process or
    an older version that did not cascade)."""
    secret = login(client, basic("alice", world["push"])).json()["refresh_token"]
    source = row(session, world["push"])
    source.revoked_at = utcnow()
    session.commit()
    assert "revoked" in refresh(client, secret).json()["errors"][0]["message"]
    source.revoked_at = None
    source.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert "expired" in refresh(client, secret).json()["errors"][0]["message"]


def test_password_change_and_disabled_account_end_refresh_tokens(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    alice = world["alice"]
    first = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    accounts.set_password(session, account=alice, password="a new password 123")
    session.commit()
    assert refresh(client, first).status_code == 401
    second = login(client, basic("alice", "a new password 123")).json()["refresh_token"]
    assert refresh(client, second).status_code == 200
    # A disabled account: refused at once, even if the row was not revoked.
    row(session, second)
    alice.is_active = False
    session.commit()
    assert refresh(client, second).status_code == 401
    alice.is_active = True
    session.commit()
    assert refresh(client, second).status_code == 200
    admin = make_account(session, "the-admin", is_admin=True)
    accounts.set_active(session, account=alice, active=False, actor=admin)
    alice.is_active = True  # re-enabled: the revocation stays
    session.commit()
    assert refresh(client, second).status_code == 401


def test_rotation_and_reuse_detection_revokes_the_family(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    first = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    response = refresh(client, first, access_type="offline")
    second = response.json()["refresh_token"]
    assert second != first and security.token_kind(second) == "refresh"
    old, new = row(session, first), row(session, second)
    assert old.rotated_at is not None and old.family_id == new.family_id
    assert new.absolute_expires_at == old.absolute_expires_at  # rotation never extends the cap
    third = refresh(client, second, access_type="offline").json()["refresh_token"]
    # The first one comes back: someone else holds a copy. The whole family dies.
    reused = refresh(client, first)
    assert reused.status_code == 401
    assert "already used" in reused.json()["errors"][0]["message"]
    for secret in (first, second, third):
        assert refresh(client, secret).status_code == 401
        assert row(session, secret).revoked_at is not None


def test_sliding_expiry_never_passes_the_absolute_cap(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    secret = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    token = row(session, secret)
    token.absolute_expires_at = utcnow() + timedelta(days=2)
    token.expires_at = utcnow() + timedelta(hours=1)
    session.commit()
    assert refresh(client, secret).status_code == 200
    token = row(session, secret)
    assert token.expires_at == token.absolute_expires_at  # slid, up to the cap only
    assert token.last_used_at is not None
    token.expires_at = token.absolute_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert "expired" in refresh(client, secret).json()["errors"][0]["message"]


def test_listed_with_kind_refresh_and_revocable_in_the_api(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    secret = login(client, basic("alice", world["push"]), client_id="docker-cli").json()[
        "refresh_token"
    ]
    api_token = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=world["alice"]
    ).secret
    session.commit()
    bearer = {"Authorization": f"Bearer {api_token}"}
    listed = client.get("/api/v1/me/tokens", headers=bearer).json()
    logins = [t for t in listed if t["kind"] == "refresh"]
    assert len(logins) == 1
    entry = logins[0]
    assert entry["client"] == "docker-cli" and entry["source"] == "personal"
    assert entry["created_at"] and "last_used_at" in entry
    assert entry["prefix"] == secret[:12]
    response = client.delete(f"/api/v1/me/tokens/{entry['id']}", headers=bearer)
    assert response.status_code == 200 and response.json()["revoked_at"]
    assert refresh(client, secret).status_code == 401
    listed = client.get("/api/v1/me/tokens", headers=bearer).json()
    assert not [t for t in listed if t["kind"] == "refresh"]


def test_people_cannot_create_refresh_tokens(
    client: TestClient, session: Session, world: dict[str, Any]
) -> None:
    with pytest.raises(ValidationFailed, match="Unknown token kind"):
        accounts.create_token(
            session, kind="refresh", name="x", scopes=["pull"], created_by=world["alice"]
        )


def test_license_log_in_keeps_a_refresh_token_bounded_by_the_license(
    app: FastAPI, client: TestClient, session: Session
) -> None:
    shop = make_shop(session)
    keyring: KeyRing = app.state.keyring
    issued = licensing.current_license(session, keyring, app.state.settings, shop.entitlement)
    session.commit()
    response = login(client, basic("license", issued.token))
    assert response.status_code == 200, response.text
    secret = response.json()["refresh_token"]
    token = row(session, secret)
    assert token.source_kind == "license" and token.source_license_id == issued.id
    assert token.account_id == shop.customer.id and token.scopes == ["pull"]
    scope = "repository:acme/redis-ha:pull,push"
    assert access_of(refresh(client, secret, scope)) == [
        {"type": "repository", "name": "acme/redis-ha", "actions": ["pull"]}
    ]
    licensing_row = session.get(type(issued), issued.id)
    assert licensing_row is not None
    licensing_row.revoked_at = utcnow()
    session.commit()
    response = refresh(client, secret, scope)
    assert response.status_code == 401
    assert "license" in response.json()["errors"][0]["message"]


def test_turning_on_two_factor_ends_refresh_tokens_of_password_log_ins(
    client: TestClient, session: Session, settings: Any, world: dict[str, Any]
) -> None:
    """A refresh token kept from a password log-in is that password log-in again: once the
    account signs in with a second factor, which docker cannot send, it is refused (as the
    password itself is), and turning two-factor sign-in on revokes it, so turning it off
    again does not bring it back. Personal access tokens stay the way in, and so do their
    refresh tokens."""
    import pyotp

    from store.accounts import two_factor

    alice = world["alice"]
    by_password = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    other = login(client, basic("alice", PASSWORD)).json()["refresh_token"]
    by_token = login(client, basic("alice", world["push"])).json()["refresh_token"]
    assert refresh(client, by_password).status_code == 200
    # The rule, whatever the rows say (two-factor turned on behind the service's back).
    alice.totp_enabled_at = utcnow()
    session.commit()
    refused = refresh(client, other, access_type="offline")
    assert refused.status_code == 401
    assert "two-factor" in refused.json()["errors"][0]["message"]
    alice.totp_enabled_at = None
    session.commit()
    # Turned on by the service: the password log-ins end for good.
    secret = two_factor.begin(session, settings=settings, account=alice).secret
    two_factor.confirm(
        session,
        settings=settings,
        account=alice,
        code=pyotp.TOTP(secret).now(),
        password=PASSWORD,
    )
    session.commit()
    assert refresh(client, by_password).status_code == 401
    assert login(client, basic("alice", PASSWORD)).status_code == 401
    assert access_of(refresh(client, by_token)) == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}
    ]
    alice.totp_enabled_at = None  # off again (as two_factor.disable leaves it)
    session.commit()
    for secret in (by_password, other):
        assert refresh(client, secret).status_code == 401
        assert row(session, secret).revoked_at is not None
    assert refresh(client, by_token).status_code == 200
