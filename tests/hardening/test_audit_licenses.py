"""Licenses as an attacker and a customer see them: another customer's license is not there
to download, and a revocation made anywhere is on the next revocation list this process
serves (docs/licensing.md, "Revocation")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.licensing import service, verify
from tests.factories import api_token, auth, make_account
from tests.licensing.conftest import Shop, make_shop


@pytest.fixture
def shop(session: Session) -> Shop:
    made = make_shop(session)
    session.commit()
    return made


def test_another_customers_license_is_not_there(
    client: TestClient, session: Session, shop: Shop
) -> None:
    stranger = auth(api_token(session, make_account(session, "stranger")))
    session.commit()
    base = f"/api/v1/entitlements/{shop.entitlement.id}"
    for path in ("", "/license", "/license.lic"):
        assert client.get(base + path, headers=stranger).status_code == 404
    refused = client.post(f"{base}/revoke", headers=stranger, json={"reason": "spite"})
    assert refused.status_code == 404
    # The page download without a log-in: sent to log in, nothing of the license shown.
    assert client.get(f"/my/licenses/{shop.entitlement.id}.lic").status_code in (303, 401)


def test_a_revocation_made_by_another_process_is_on_the_next_list(
    client: TestClient, session: Session, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = auth(api_token(session, shop.customer))
    owner = auth(api_token(session, shop.owner))
    session.commit()
    url = f"/api/v1/entitlements/{shop.entitlement.id}"
    document = client.get(f"{url}/license", headers=customer).json()
    lid, token = document["id"], document["token"]
    assert client.get("/licenses/revocations").json()["revoked"] == []  # built and kept

    # Another store process revokes it: this process's own "I revoked one" never fires.
    with monkeypatch.context() as m:
        m.setattr(service, "_revocations_changed", lambda: None)
        revoked = client.post(f"{url}/revoke", headers=owner, json={"reason": "refund"})
    assert revoked.status_code == 200, revoked.text

    body = client.get("/licenses/revocations").json()
    assert body["revoked"] == [lid]
    jwks = client.get("/.well-known/jwks.json").json()
    verifier = verify.Verifier(jwks)
    assert verifier.verify(token).valid  # without the list, offline, it still verifies
    assert verifier.verify(token, revocations=body["jws"]).verdict == "revoked"
    # and the store itself issues nothing more for it
    assert client.get(f"{url}/license", headers=customer).status_code == 409
