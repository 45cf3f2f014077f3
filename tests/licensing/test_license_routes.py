"""License routes: JWKS, revocation list, PEM keys, license JSON and .lic downloads."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.db import utcnow
from store.licensing import verify
from store.mail.models import OutboxMessage
from tests.factories import api_token, auth, make_account
from tests.licensing.conftest import Shop


def jwks_of(client: TestClient) -> dict[str, Any]:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_jwks(client: TestClient) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    assert "max-age=300" in response.headers["cache-control"]
    [key] = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert key["use"] == "sig" and key["kid"].startswith("lic-") and key["x"]
    assert jwks_of(client) == response.json()  # the first key is made once


def test_license_keys_as_pem(client: TestClient) -> None:
    kid = jwks_of(client)["keys"][0]["kid"]
    response = client.get("/api/v1/licenses/keys")
    assert response.status_code == 200
    [key] = response.json()
    assert key["kid"] == kid and key["signing"] is True and key["alg"] == "EdDSA"
    assert key["public_pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_license_json_and_file(client: TestClient, session: Session, shop: Shop) -> None:
    headers = auth(api_token(session, shop.customer))
    url = f"/api/v1/entitlements/{shop.entitlement.id}/license"
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["entitlement_id"] == str(shop.entitlement.id)
    assert body["claims"]["lid"] == body["id"] and body["grace_until"] is None
    assert body["filename"].endswith(".lic") and body["revoked_at"] is None
    assert client.get(url, headers=headers).json()["id"] == body["id"]  # stable

    verifier = verify.Verifier(jwks_of(client), issuer="http://store.test")
    assert verifier.verify(body["token"]).valid

    download = client.get(url + ".lic", headers=headers)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/x-store-license")
    assert f'filename="{body["filename"]}"' in download.headers["content-disposition"]
    assert verify.extract_token(download.text) == body["token"]


def test_a_license_issued_is_mailed_once_with_the_lic_attached(
    client: TestClient, session: Session, shop: Shop
) -> None:
    headers = auth(api_token(session, shop.customer))
    url = f"/api/v1/entitlements/{shop.entitlement.id}/license"
    body = client.get(url, headers=headers).json()
    assert client.get(url + ".lic", headers=headers).status_code == 200  # the same document
    session.expire_all()
    [message] = session.scalars(
        select(OutboxMessage).where(OutboxMessage.template == "license_issued")
    ).all()
    assert message.to_addr == shop.customer.email and message.category == "transactional"
    assert "Redis HA" in message.subject
    [attached] = message.attachments
    assert attached["filename"] == body["filename"]
    text = base64.b64decode(attached["data"]).decode()
    assert verify.extract_token(text) == body["token"]


def test_license_routes_need_the_holder(client: TestClient, session: Session, shop: Shop) -> None:
    url = f"/api/v1/entitlements/{shop.entitlement.id}/license"
    assert client.get(url).status_code == 401
    stranger = auth(api_token(session, make_account(session)))
    assert client.get(url, headers=stranger).status_code == 404
    assert client.get(url + ".lic", headers=stranger).status_code == 404
    missing = f"/api/v1/entitlements/{uuid.uuid4()}/license"
    assert client.get(missing, headers=auth(api_token(session, shop.customer))).status_code == 404
    # The publisher's owner administers the entitlement.
    owner = auth(api_token(session, shop.owner))
    assert client.get(url, headers=owner).status_code == 200


def test_revocation_list_route(client: TestClient, session: Session, shop: Shop) -> None:
    customer = auth(api_token(session, shop.customer))
    owner = auth(api_token(session, shop.owner))
    entitlement_url = f"/api/v1/entitlements/{shop.entitlement.id}"
    lid = client.get(f"{entitlement_url}/license", headers=customer).json()["id"]
    before = client.get("/licenses/revocations")
    assert before.status_code == 200 and before.json()["revoked"] == []
    assert "max-age=60" in before.headers["cache-control"]

    revoked = client.post(f"{entitlement_url}/revoke", headers=owner, json={"reason": "refund"})
    assert revoked.status_code == 200, revoked.text
    response = client.get("/licenses/revocations")
    body = response.json()
    assert body["revoked"] == [lid] and body["iss"] == "http://store.test"
    assert body["next_update"] - body["iat"] == 3600
    assert abs(body["iat"] - utcnow().timestamp()) < 60

    verifier = verify.Verifier(jwks_of(client))
    crl = verifier.load_revocations(body["jws"])
    assert crl.revoked == {lid} and crl.issued_at == body["iat"]
    jose = client.get("/licenses/revocations", headers={"Accept": "application/jose"})
    assert jose.headers["content-type"].startswith("application/jose")
    assert verifier.load_revocations(jose.text).revoked == {lid}

    gone = client.get(f"{entitlement_url}/license", headers=customer)
    assert gone.status_code == 409 and gone.json()["error"] == "revoked"


def test_my_license_download_needs_login(app: FastAPI, session: Session, shop: Shop) -> None:
    from store.web.auth import login_session

    def test_login(request: Request, username: str) -> dict[str, str]:
        with app.state.sessionmaker() as s:
            from store.accounts import service as accounts

            login_session(request, s, accounts.get_account_by_username(s, username))
            s.commit()
        return {"ok": username}

    app.add_api_route("/_test/login/{username}", test_login)
    url = f"/my/licenses/{shop.entitlement.id}.lic"
    with TestClient(app, base_url="http://store.test") as client:
        assert client.get(url).status_code == 401
        client.get(f"/_test/login/{make_account(session).username}")
        assert client.get(url).status_code == 404  # not theirs
        client.get("/_test/login/customer")
        response = client.get(url)
        assert response.status_code == 200, response.text
        assert "attachment" in response.headers["content-disposition"]
        token = verify.extract_token(response.text)
        assert verify.Verifier(jwks_of(client)).verify(token).valid
