"""A license as a registry credential: every outcome of resolve_license_credential."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import utcnow
from store.errors import Unauthorized
from store.keys import crypto
from store.keys import service as keys
from store.keys.service import KeyRing, LoadedKey
from store.licensing import credentials, entitlements, service
from store.licensing.models import Entitlement, License
from tests.licensing.conftest import Shop


@pytest.fixture
def issued(session: Session, keyring: KeyRing, settings: Settings, shop: Shop) -> License:
    return service.current_license(session, keyring, settings, shop.entitlement)


def resolve(
    session: Session, keyring: KeyRing, settings: Settings, user: str, token: str, **kw: Any
) -> Entitlement:
    return credentials.resolve_license_credential(session, keyring, settings, user, token, **kw)


def test_username_convention() -> None:
    assert credentials.is_license_username("license")
    assert credentials.is_license_username("4b0d6c1e-0000-4000-8000-000000000001")
    assert not credentials.is_license_username("alice")
    assert not credentials.is_license_username("License")


def test_valid_license_resolves_to_its_entitlement(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    for username in ("license", str(issued.id), str(issued.id).upper()):
        got = resolve(session, keyring, settings, username, issued.token)
        assert got.id == shop.entitlement.id and got.product.repository == "acme/redis-ha"
    # Whitespace from a pasted token does not matter.
    assert resolve(session, keyring, settings, "license", f" {issued.token}\n").id == got.id


def test_username_must_match_the_license(
    session: Session, keyring: KeyRing, settings: Settings, issued: License
) -> None:
    with pytest.raises(Unauthorized, match="username"):
        resolve(session, keyring, settings, "4b0d6c1e-0000-4000-8000-000000000001", issued.token)


@pytest.mark.parametrize("token", ["", "password", "a.b.c", "stp_notalicense"])
def test_garbage_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, issued: License, token: str
) -> None:
    with pytest.raises(Unauthorized) as info:
        resolve(session, keyring, settings, "license", token)
    assert info.value.code == "bad_license"


def test_tampered_token_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, issued: License
) -> None:
    head, _body, sig = issued.token.split(".")
    claims = service.decode_payload(issued.token)
    claims["product"]["repository"] = "acme/other"
    forged = f"{head}.{crypto.b64url(crypto._json(claims))}.{sig}"
    with pytest.raises(Unauthorized, match="signature"):
        resolve(session, keyring, settings, "license", forged)


def test_revoked_license_is_refused_immediately(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    resolve(session, keyring, settings, "license", issued.token)  # keys now cached
    entitlements.revoke(session, entitlement=shop.entitlement, actor=None, reason="dispute")
    with pytest.raises(Unauthorized, match="revoked: dispute") as info:
        resolve(session, keyring, settings, "license", issued.token)
    assert info.value.code == "license_revoked"


def test_expired_license_is_refused_and_grace_accepted(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    ends = shop.entitlement.ends_at
    assert ends is not None
    with pytest.raises(Unauthorized, match="expired") as info:
        resolve(session, keyring, settings, "license", issued.token, now=ends + timedelta(days=1))
    assert info.value.code == "license_expired"
    entitlements.extend(
        session,
        entitlement=shop.entitlement,
        ends_at=ends,
        grace_until=ends + timedelta(days=7),
        signer=None,
    )
    graced = service.current_license(session, keyring, settings, shop.entitlement)
    got = resolve(session, keyring, settings, "license", graced.token, now=ends + timedelta(days=1))
    assert got.id == shop.entitlement.id


def test_not_yet_valid_license_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, issued: License
) -> None:
    with pytest.raises(Unauthorized) as info:
        resolve(
            session, keyring, settings, "license", issued.token, now=utcnow() - timedelta(days=3)
        )
    assert info.value.code == "license_not_yet_valid"


def test_suspended_entitlement_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    entitlements.set_status(session, entitlement=shop.entitlement, status="suspended", signer=None)
    with pytest.raises(Unauthorized, match="suspended") as info:
        resolve(session, keyring, settings, "license", issued.token)
    assert info.value.code == "license_suspended"


def test_unknown_key_and_foreign_signer_are_refused(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    foreign = LoadedKey("lic-foreign", "EdDSA", stranger, stranger.public_key())
    payload = service.decode_payload(issued.token)
    with pytest.raises(Unauthorized, match="not among the trusted keys"):
        resolve(session, keyring, settings, "license", service.sign(foreign, payload))
    impostor = LoadedKey(issued.kid, "EdDSA", stranger, stranger.public_key())
    with pytest.raises(Unauthorized, match="signature"):
        resolve(session, keyring, settings, "license", service.sign(impostor, payload))


def test_unknown_license_id_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    # Validly signed, but the store never recorded it.
    payload = service.decode_payload(issued.token)
    payload["lid"] = "4b0d6c1e-0000-4000-8000-000000000001"
    token = service.sign(keyring.signer("license"), payload)
    with pytest.raises(Unauthorized, match="no record"):
        resolve(session, keyring, settings, "license", token)


def test_license_of_another_issuer_is_refused(
    session: Session, keyring: KeyRing, settings: Settings, issued: License
) -> None:
    payload = service.decode_payload(issued.token)
    payload["isid"] = "elsewhere-issuer"
    token = service.sign(keyring.signer("license"), payload)
    with pytest.raises(Unauthorized, match="elsewhere"):
        resolve(session, keyring, settings, "license", token)
    # A license without an issuer id names the store by its URL.
    del payload["isid"]
    payload["iss"] = "https://elsewhere.example"
    token = service.sign(keyring.signer("license"), payload)
    with pytest.raises(Unauthorized, match="elsewhere"):
        resolve(session, keyring, settings, "license", token)


def test_license_survives_a_change_of_public_url(
    session: Session, keyring: KeyRing, settings: Settings, issued: License
) -> None:
    """The issuer id stays when the public URL changes: older licenses still log in."""
    assert service.decode_payload(issued.token)["isid"] == settings.resolved_license_issuer_id
    moved = settings.model_copy(update={"public_url": "https://new.example"})
    assert moved.resolved_license_issuer_id == settings.resolved_license_issuer_id
    assert resolve(session, keyring, moved, "license", issued.token).id == issued.entitlement_id


def test_rotated_and_retired_keys(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    resolve(session, keyring, settings, "license", issued.token)  # old key set cached
    keys.rotate(session, purpose="license", secret=settings.resolved_secret_key)
    keyring.invalidate()
    fresh = service.issue_license(session, keyring, settings, shop.entitlement)
    # The new key is not in this process's cached key set yet: it is looked up and loaded.
    assert resolve(session, keyring, settings, "license", fresh.token).id == shop.entitlement.id
    keys.retire(session, kid=issued.kid, token_ttl=settings.registry_token_ttl)
    credentials._verifiers.clear()
    with pytest.raises(Unauthorized, match="not among the trusted keys"):
        resolve(session, keyring, settings, "license", issued.token)


def test_works_without_a_key_ring(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop, issued: License
) -> None:
    got = credentials.resolve_license_credential(session, None, settings, "license", issued.token)
    assert got.id == shop.entitlement.id
