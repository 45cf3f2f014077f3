"""A retired license key signs nothing more, and what it signed is replaced, on SQLite and
PostgreSQL:

- a customer whose current license was signed by a key since retired gets a new document,
  signed by the key that signs now (before, "My content", the API and the CLI handed back
  the old one, which every verifier and the registry refuse with ``unknown_key``);
- a process that loaded the license key before another process retired it (within its
  refresh interval) signs with the key that signs now, never with the retired one.
"""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.keys import service as keys
from store.keys.service import KeyRing
from store.licensing import service as licensing
from store.licensing import verify
from tests.factories import api_token, auth
from tests.licensing.conftest import Shop, make_shop


@pytest.fixture
def keyring(app: FastAPI) -> KeyRing:
    ring: KeyRing = app.state.keyring
    return ring


@pytest.fixture
def shop(session: Session) -> Shop:
    return make_shop(session)


def _retire_after_rotation(session: Session, settings: Settings, old: str) -> str:
    """What an operator does on another host: rotate, then retire the old key."""
    new = keys.rotate(session, purpose="license", secret=settings.resolved_secret_key)
    keys.retire(session, kid=old, token_ttl=settings.registry_token_ttl)
    session.commit()
    return new.kid


def _verdict(client: TestClient, token: str) -> str:
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    return verify.Verifier(jwks.json()).verify(token).verdict


def test_a_license_signed_by_a_retired_key_is_replaced(
    client: TestClient, session: Session, settings: Settings, keyring: KeyRing, shop: Shop
) -> None:
    headers = auth(api_token(session, shop.customer))
    session.commit()
    url = f"/api/v1/entitlements/{shop.entitlement.id}/license"
    first = client.get(url, headers=headers)
    assert first.status_code == 200, first.text
    old_kid = licensing.get_license(session, uuid.UUID(first.json()["id"])).kid
    assert _verdict(client, first.json()["token"]) == "valid"

    new_kid = _retire_after_rotation(session, settings, old_kid)
    keyring.invalidate()

    again = client.get(url, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] != first.json()["id"]
    assert licensing.get_license(session, uuid.UUID(again.json()["id"])).kid == new_kid
    assert _verdict(client, again.json()["token"]) == "valid"
    lic = client.get(f"{url}.lic", headers=headers)
    assert lic.status_code == 200 and lic.text.rstrip().splitlines()[-1] == again.json()["token"]


def test_a_process_never_signs_with_a_key_retired_elsewhere(
    client: TestClient,
    session: Session,
    settings: Settings,
    session_factory: sessionmaker[Session],
    shop: Shop,
) -> None:
    # This process loaded the signing key (it looks again only every 30 s).
    here = KeyRing(lambda: session_factory, settings.resolved_secret_key, refresh_seconds=300)
    old_kid = licensing.current_license(session, here, settings, shop.entitlement).kid
    assert here.signer("license").kid == old_kid
    session.commit()

    new_kid = _retire_after_rotation(session, settings, old_kid)

    document = licensing.issue_license(session, here, settings, shop.entitlement)
    assert document.kid == new_kid
    assert _verdict(client, document.token) == "valid"
    crl = licensing.revocation_list(session, here, settings)
    jwks = client.get("/.well-known/jwks.json").json()
    assert verify.Verifier(jwks).load_revocations(crl.jws).revoked == frozenset()
