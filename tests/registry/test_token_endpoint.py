"""The token endpoint through HTTP: credentials, scopes, token format, denials with reasons."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import security
from store.accounts import service as accounts
from store.accounts.models import AccessToken
from store.catalog import service as catalog
from store.db import utcnow
from store.keys import crypto
from store.licensing import entitlements
from store.registry import credentials, tokens
from store.registry.routes import registry_state
from tests.factories import (
    PASSWORD,
    make_account,
    make_admin,
    make_org,
    make_product,
    paid_tier,
    tier_of,
)

SERVICE = "store-registry"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    alice = make_account(session, "alice")
    bob = make_account(session, "bob")
    acme = make_org(session, alice, "acme")
    paid = make_product(session, acme, alice, "app", tiers=[paid_tier()])
    public = make_product(
        session, acme, alice, "open", tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    robot = accounts.create_token(
        session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
    ).secret
    pat = accounts.create_token(
        session, kind="personal", name="cli", scopes=["pull"], created_by=bob
    ).secret
    session.commit()
    return {
        "alice": alice,
        "bob": bob,
        "acme": acme,
        "paid": paid,
        "public": public,
        "robot": robot,
        "pat": pat,
    }


def get_token(
    client: TestClient, scopes: list[str], headers: dict[str, str] | None = None, **params: str
):
    query = [("service", SERVICE), *(("scope", s) for s in scopes), *params.items()]
    return client.get("/token", params=query, headers=headers or {})


def access_of(response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text
    return tokens.decode_unverified(response.json()["token"])[1]["access"]


def test_token_format(client: TestClient, app: FastAPI, world: dict[str, object]) -> None:
    response = get_token(client, ["repository:acme/app:pull,push"], basic("alice", PASSWORD))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"] == body["access_token"]
    assert isinstance(body["expires_in"], int) and body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["issued_at"])
    assert response.headers["cache-control"] == "no-store"
    token = body["token"]
    assert "=" not in token
    header, claims = tokens.decode_unverified(token)
    signer = app.state.keyring.signer("registry")
    assert header == {"typ": "JWT", "alg": "ES256", "kid": signer.kid}
    assert header["kid"] == crypto.libtrust_kid(signer.public_key)
    assert tokens.verify(token, signer.public_key) == claims
    assert claims["iss"] == "store-token-issuer" and claims["aud"] == SERVICE
    assert claims["sub"] == "alice"
    assert all(isinstance(claims[k], int) for k in ("exp", "nbf", "iat"))
    assert claims["exp"] - claims["iat"] == 300
    assert re.fullmatch(r"[0-9a-f]{32}", claims["jti"])
    assert claims["access"] == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}
    ]


def test_login_without_scope_gets_an_empty_token(
    client: TestClient, world: dict[str, object]
) -> None:
    assert access_of(get_token(client, [], basic("bob", PASSWORD))) == []
    assert access_of(get_token(client, [])) == []  # anonymous


def test_repeated_space_separated_and_duplicate_scopes(
    client: TestClient, world: dict[str, object]
) -> None:
    response = get_token(
        client,
        [
            "repository:acme/new:pull,push repository:acme/app:pull",
            "repository:acme/app:pull",
            "repository:acme/new:pull",
        ],
        {
            "Authorization": f"Basic {base64.b64encode(('ci:' + str(world['robot'])).encode()).decode()}"
        },
    )
    assert access_of(response) == [
        {"type": "repository", "name": "acme/new", "actions": ["pull", "push"]},
        {"type": "repository", "name": "acme/app", "actions": ["pull"]},
    ]


def test_bad_requests(client: TestClient, world: dict[str, object]) -> None:
    response = client.get(
        "/token", params={"service": "someone-else", "scope": "repository:acme/app:pull"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
    # Scopes that cannot be parsed are dropped (a token without access), never a 4xx/5xx.
    assert access_of(get_token(client, ["repository:ACME/App:pull", "nonsense"])) == []
    # A bad scope next to a good one is ignored, not fatal.
    assert access_of(get_token(client, ["repository:acme/open:pull", "nonsense"])) == [
        {"type": "repository", "name": "acme/open", "actions": ["pull"]}
    ]


@pytest.mark.parametrize(
    "headers",
    [
        basic("bob", "wrong password"),
        basic("nobody", PASSWORD),
        basic("bob", ""),
        {"Authorization": "Basic !!!notbase64"},
        {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        basic("bob", "stp_" + "x" * 36),
    ],
)
def test_wrong_credentials_are_401_unauthorized(
    client: TestClient, world: dict[str, object], headers: dict[str, str]
) -> None:
    response = get_token(client, ["repository:acme/open:pull"], headers)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_personal_token_must_be_used_with_its_owner(
    client: TestClient, world: dict[str, object]
) -> None:
    pat = str(world["pat"])
    assert access_of(get_token(client, ["repository:acme/open:pull"], basic("bob", pat)))
    assert get_token(client, ["repository:acme/open:pull"], basic("alice", pat)).status_code == 401


def test_revoked_and_expired_tokens_and_disabled_accounts(
    client: TestClient, session: Session, world: dict[str, object]
) -> None:
    bob = world["bob"]
    issued = accounts.create_token(
        session, kind="personal", name="t", scopes=["pull"], created_by=bob
    )  # type: ignore[arg-type]
    accounts.revoke_token(session, token=issued.token, actor=bob)  # type: ignore[arg-type]
    response = get_token(client, [], basic("bob", issued.secret))
    assert response.status_code == 401 and "revoked" in response.json()["errors"][0]["message"]
    issued = accounts.create_token(
        session,
        kind="personal",
        name="t2",
        scopes=["pull"],
        created_by=bob,
        expires_at=utcnow() + timedelta(seconds=1),
    )  # type: ignore[arg-type]
    issued.token.expires_at = utcnow() - timedelta(seconds=1)
    session.flush()
    assert get_token(client, [], basic("bob", issued.secret)).status_code == 401
    accounts.set_active(session, account=bob, active=False, actor=None)  # type: ignore[arg-type]
    assert get_token(client, [], basic("bob", PASSWORD)).status_code == 401
    assert get_token(client, [], basic("bob", str(world["pat"]))).status_code == 401


def test_a_token_signed_moments_ago_for_the_same_grant_is_reused_not_the_checks(
    client: TestClient, session: Session, world: dict[str, object]
) -> None:
    """Within a few seconds the same grant gets the token already signed for it (what is
    left of its lifetime in expires_in); every check still runs: a token revoked, an
    entitlement revoked or another grant is never answered from it."""
    alice, bob, product = world["alice"], world["bob"], world["paid"]
    pat = str(world["pat"])
    first = get_token(client, ["repository:acme/open:pull"], basic("bob", pat)).json()
    again = get_token(client, ["repository:acme/open:pull"], basic("bob", pat)).json()
    assert again["token"] == first["token"] and again["issued_at"] == first["issued_at"]
    assert 0 < again["expires_in"] <= first["expires_in"] == 300
    # Another grant (more access, another subject): another token.
    grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=bob)  # type: ignore[arg-type]
    both = ["repository:acme/open:pull", "repository:acme/app:pull"]
    wider = get_token(client, both, basic("bob", pat))
    assert wider.json()["token"] != first["token"] and len(access_of(wider)) == 2
    robot = get_token(client, ["repository:acme/open:pull"], basic("ci", str(world["robot"])))
    assert robot.json()["token"] != first["token"]
    # The entitlement revoked: the next request is refused access to it at once.
    entitlements.revoke(session, entitlement=grant, actor=alice, reason="refund")  # type: ignore[arg-type]
    assert access_of(get_token(client, both, basic("bob", pat))) == access_of(
        get_token(client, ["repository:acme/open:pull"], basic("bob", pat))
    )
    # The access token revoked: refused at the next request, the token not handed out again.
    revoked = session.scalars(
        select(AccessToken).where(AccessToken.token_hash == security.hash_token(pat))
    ).one()
    accounts.revoke_token(session, token=revoked, actor=bob)  # type: ignore[arg-type]
    response = get_token(client, ["repository:acme/open:pull"], basic("bob", pat))
    assert response.status_code == 401 and "revoked" in response.json()["errors"][0]["message"]


def _denial(response) -> dict[str, object]:
    assert response.status_code == 401, response.text
    error = response.json()["errors"][0]
    assert error["code"] == "DENIED"
    return error


def test_denials_say_why_and_where(
    client: TestClient, session: Session, world: dict[str, object]
) -> None:
    url = "http://store.test/products/acme/app"
    bob, alice, product = world["bob"], world["alice"], world["paid"]
    error = _denial(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))
    assert error["message"] == f"You have no license for acme/app; get access at {url}"
    assert error["detail"][0]["reason"] == "no_license" and error["detail"][0]["product_url"] == url
    error = _denial(get_token(client, ["repository:acme/app:pull"]))
    assert error["message"] == f"Log in to pull acme/app; get access at {url}"

    grant = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=bob)  # type: ignore[arg-type]
    assert access_of(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))

    entitlements.extend(
        session, entitlement=grant, ends_at=utcnow() - timedelta(seconds=1), signer=None
    )
    grant.starts_at = utcnow() - timedelta(days=1)
    session.flush()
    error = _denial(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))
    assert error["detail"][0]["reason"] == "expired" and "expired" in error["message"]

    entitlements.revoke(session, entitlement=grant, actor=alice, reason="refund")  # type: ignore[arg-type]
    error = _denial(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))
    assert error["detail"][0]["reason"] == "revoked" and url in error["message"]

    other = entitlements.grant(session, actor=alice, tier=tier_of(product, "pro"), account=bob)  # type: ignore[arg-type]
    entitlements.set_status(
        session, entitlement=other, status="suspended", reason="past due", signer=None
    )
    error = _denial(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))
    assert error["detail"][0]["reason"] == "suspended"

    entitlements.set_status(session, entitlement=other, status="active", signer=None)
    catalog.set_status(
        session, actor=make_admin(session), product=product, status="suspended", reason="malware"
    )  # type: ignore[arg-type]
    error = _denial(get_token(client, ["repository:acme/app:pull"], basic("bob", PASSWORD)))
    assert error["detail"][0]["reason"] == "product_suspended"
    # Anonymous: the answer an unknown repository gets (a suspended product is not named).
    anonymous = _denial(get_token(client, ["repository:acme/app:pull"]))
    unknown = _denial(get_token(client, ["repository:acme/nothing-here:pull"]))
    assert anonymous["message"] == "No access to acme/app."
    assert unknown["message"] == "No access to acme/nothing-here."
    same = {"repository": "", "message": ""}
    assert {**anonymous["detail"][0], **same} == {**unknown["detail"][0], **same}


def test_partial_grant_keeps_allowed_scopes(client: TestClient, world: dict[str, object]) -> None:
    response = get_token(
        client, ["repository:acme/app:pull repository:acme/open:pull"], basic("bob", PASSWORD)
    )
    assert access_of(response) == [{"type": "repository", "name": "acme/open", "actions": ["pull"]}]


def test_catalog_scope(
    client: TestClient, session: Session, world: dict[str, object], app: FastAPI
) -> None:
    assert get_token(client, ["registry:catalog:*"], basic("alice", PASSWORD)).status_code == 401
    make_admin(session)
    assert access_of(get_token(client, ["registry:catalog:*"], basic("root-admin", PASSWORD))) == [
        {"type": "registry", "name": "catalog", "actions": ["*"]}
    ]
    sync_pw = credentials.sync_password(app.state.settings)
    assert access_of(
        get_token(client, ["registry:catalog:*"], basic(credentials.SYNC_USERNAME, sync_pw))
    )
    assert get_token(client, [], basic(credentials.SYNC_USERNAME, "guess")).status_code == 401


def _chunks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 7):
        yield data[i : i + 7]


def test_oauth2_password_and_refresh_grants(client: TestClient, world: dict[str, object]) -> None:
    response = client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "service": SERVICE,
            "client_id": "docker",
            "access_type": "offline",
            "scope": "repository:acme/app:pull",
        },
    )
    assert response.status_code == 200, response.text
    refresh = response.json()["refresh_token"]
    assert security.token_kind(refresh) == "refresh"
    form = f"grant_type=refresh_token&refresh_token={refresh}&client_id=containers%2Fimage&service={SERVICE}&scope=repository%3Aacme%2Fapp%3Apull%2Cpush"
    response = client.post(
        "/token",
        content=_chunks(form.encode()),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert access_of(response) == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]}
    ]
    assert tokens.decode_unverified(response.json()["token"])[1]["sub"] == "alice"
    # A personal token is not a refresh token, and a wrong grant type is refused.
    bad = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": str(world["pat"])}
    )
    assert bad.status_code == 401
    assert client.post("/token", data={"grant_type": "client_credentials"}).status_code == 401


def test_offline_token_on_get(client: TestClient, world: dict[str, object]) -> None:
    response = get_token(
        client, [], basic("bob", PASSWORD), offline_token="true", client_id="docker"
    )
    assert security.token_kind(response.json()["refresh_token"]) == "refresh"
    response = get_token(client, [], basic("bob", PASSWORD))
    assert "refresh_token" not in response.json()


def test_password_checks_are_cached_and_invalidated(
    client: TestClient,
    app: FastAPI,
    session: Session,
    world: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = security.check_password

    def counting(password_hash: str, password: str) -> bool:
        calls.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(security, "check_password", counting)
    for _ in range(3):
        assert get_token(client, [], basic("bob", PASSWORD)).status_code == 200
    assert len(calls) == 1
    assert get_token(client, [], basic("bob", "not it at all")).status_code == 401
    assert len(calls) == 2  # failures are not cached
    assert len(registry_state(app).password_cache) == 1
    accounts.set_password(session, account=world["bob"], password="a brand new password")  # type: ignore[arg-type]
    assert get_token(client, [], basic("bob", PASSWORD)).status_code == 401
    assert get_token(client, [], basic("bob", "a brand new password")).status_code == 200
    assert len(calls) == 4


def test_password_cache_is_bounded_and_expires() -> None:
    cache = credentials.PasswordCache(ttl=60, size=3)
    for i in range(5):
        cache.remember(f"u{i}", "pw", "hash")
    assert len(cache) == 3
    assert not cache.hit("u0", "pw", "hash") and cache.hit("u4", "pw", "hash")
    assert not cache.hit("u4", "pw", "other-hash") and not cache.hit("u4", "other", "hash")
    expired = credentials.PasswordCache(ttl=-1)
    expired.remember("u", "pw", "hash")
    assert not expired.hit("u", "pw", "hash")


def test_why_cant_i_pull_api(
    client: TestClient, session: Session, world: dict[str, object]
) -> None:
    token = accounts.create_token(
        session, kind="personal", name="api", scopes=["api"], created_by=world["bob"]
    ).secret  # type: ignore[arg-type]
    response = client.get(
        "/api/v1/registry/access",
        params=[
            ("repository", "acme/app"),
            ("scope", "repository:acme/open:pull,push"),
            ("scope", "bad"),
        ],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["subject"] == "bob"
    assert body["granted"] == [{"type": "repository", "name": "acme/open", "actions": ["pull"]}]
    reasons = {r["repository"]: r for r in body["refused"]}
    assert reasons["acme/app"]["reason"] == "no_license"
    assert reasons["acme/app"]["product_url"] == "http://store.test/products/acme/app"
    assert reasons["acme/open"]["reason"] == "push_denied"
    assert body["invalid"] and body["invalid"][0].startswith("bad")
    anonymous = client.get("/api/v1/registry/access", params={"repository": "acme/app"}).json()
    assert anonymous["refused"][0]["reason"] == "login_required"


def test_robot_certificate_bundle_kid(app: FastAPI, session: Session) -> None:
    from store.keys import service as keys

    key = keys.ensure_key(
        session, purpose="registry", secret=app.state.settings.resolved_secret_key
    )
    cert = x509.load_pem_x509_certificate(key.certificate_pem.encode())
    assert crypto.libtrust_kid(cert.public_key()) == key.kid  # type: ignore[arg-type]


def test_the_token_answer_is_what_orjson_makes_of_it(
    client: TestClient, world: dict[str, object]
) -> None:
    import orjson

    from store.registry.routes import _token_body

    response = get_token(client, ["repository:acme/open:pull"], basic("bob", str(world["pat"])))
    body = response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert response.content == orjson.dumps(body)
    claims = tokens.decode_unverified(body["token"])[1]
    issued = tokens.IssuedJWT(body["token"], utcnow(), 299, claims)
    assert _token_body(issued) == orjson.dumps(
        {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": 299,
            "issued_at": tokens.rfc3339(issued.issued_at),
        }
    )


def test_query_strings_parse_the_same_from_the_cache(
    client: TestClient, world: dict[str, object]
) -> None:
    pat = basic("bob", str(world["pat"]))
    scopes = ["repository:acme/open:pull", "repository:acme/open:pull,push x:y", "bad scope"]
    first = [access_of(get_token(client, [s], pat)) for s in scopes]
    assert first == [access_of(get_token(client, [s], pat)) for s in scopes]
    assert (
        first[0] == first[1] == [{"type": "repository", "name": "acme/open", "actions": ["pull"]}]
    )
    assert first[2] == []
