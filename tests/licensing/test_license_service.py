"""Issuing, re-issuing, revoking and rotating: the store side of license documents."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import utcnow
from store.errors import Conflict
from store.keys import service as keys
from store.keys.service import KeyRing
from store.licensing import entitlements, service, verify
from store.licensing.models import License
from store.licensing.signer import LicenseSigner
from tests.factories import make_account, make_org
from tests.licensing.conftest import Shop

PAYLOAD_ORDER = [
    "v",
    "lid",
    "iss",
    "sub",
    "product",
    "tier",
    "features",
    "seats",
    "iat",
    "nbf",
    "exp",
    "grace_until",
    "ent",
    "isid",
]


def verifier_for(session: Session, keyring: KeyRing, settings: Settings) -> verify.Verifier:
    return verify.Verifier(service.jwks(session, keyring, settings), issuer=settings.public_url)


def test_issue_and_verify_round_trip(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    document = service.issue_license(session, keyring, settings, e)
    assert document.entitlement_id == e.id and document.kid.startswith("lic-")
    assert document.expires_at == e.ends_at and document.revoked_at is None
    result = verifier_for(session, keyring, settings).verify(document.token)
    assert result.verdict == "valid", result.reason
    claims = result.claims
    assert claims is not None
    assert list(claims) == [k for k in PAYLOAD_ORDER if k != "grace_until"]
    assert claims["v"] == 1 and claims["lid"] == str(document.id)
    assert claims["iss"] == "http://store.test"
    assert claims["sub"] == {"type": "account", "id": str(shop.customer.id), "name": "Cus Tomer"}
    assert claims["product"] == {
        "id": str(shop.product.id),
        "repository": "acme/redis-ha",
        "kind": "image",
        "title": "Redis HA",
    }
    assert claims["tier"] == {"slug": "pro", "name": "Pro"}
    assert claims["features"] == ["sso", "backup"] and claims["seats"] == 5
    assert claims["exp"] == int(e.ends_at.timestamp())  # type: ignore[union-attr]
    assert claims["ent"] == str(e.id)


def test_header_is_eddsa_with_kid_and_type(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    document = service.issue_license(session, keyring, settings, shop.entitlement)
    header = verify._b64decode_json(document.token.split(".")[0])
    assert header == {"alg": "EdDSA", "typ": "store-license+jws", "kid": document.kid}


def test_perpetual_organization_license_and_grace(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    buyer = make_org(session, make_account(session), "buyer", name="Buyer Ltd")
    held = entitlements.create_entitlement(
        session, tier=shop.entitlement.tier, source="grant", org=buyer
    )
    claims = service.decode_payload(service.issue_license(session, keyring, settings, held).token)
    assert "exp" not in claims and "grace_until" not in claims
    assert claims["sub"] == {"type": "organization", "id": str(buyer.id), "name": "Buyer Ltd"}
    ends = utcnow() - timedelta(days=1)
    entitlements.extend(
        session,
        entitlement=held,
        ends_at=ends,
        grace_until=utcnow() + timedelta(days=3),
        signer=None,
    )
    graced = service.current_license(session, keyring, settings, held)
    assert list(service.decode_payload(graced.token)) == PAYLOAD_ORDER
    result = verifier_for(session, keyring, settings).verify(graced.token)
    assert result.verdict == "in_grace"


def test_current_license_is_lazy_and_stable(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    first = service.current_license(session, keyring, settings, shop.entitlement)
    again = service.current_license(session, keyring, settings, shop.entitlement)
    assert again.id == first.id
    assert [d.id for d in service.licenses_of(session, shop.entitlement)] == [first.id]


def test_renewal_reissues_and_old_license_stays_valid_until_its_expiry(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    old = service.current_license(session, keyring, settings, e)
    old_exp = e.ends_at
    assert old_exp is not None
    # Given a signer, the change of terms re-issues at once.
    signer = LicenseSigner(keyring, settings)
    entitlements.extend(session, entitlement=e, ends_at=old_exp + timedelta(days=30), signer=signer)
    documents = service.licenses_of(session, e)
    assert len(documents) == 2 and documents[1].id == old.id
    new = documents[0]
    assert new.expires_at == old_exp + timedelta(days=30)
    assert service.current_license(session, keyring, settings, e).id == new.id
    verifier = verifier_for(session, keyring, settings)
    assert verifier.verify(old.token).valid
    after_old_expiry = (old_exp + timedelta(days=1)).timestamp()
    assert verifier.verify(old.token, now=after_old_expiry).verdict == "expired"
    assert verifier.verify(new.token, now=after_old_expiry).valid


def test_change_without_signing_context_reissues_lazily(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    old = service.current_license(session, keyring, settings, e)
    entitlements.extend(session, entitlement=e, ends_at=None, signer=None)  # now perpetual
    assert len(service.licenses_of(session, e)) == 1
    new = service.current_license(session, keyring, settings, e)
    assert new.id != old.id and "exp" not in service.decode_payload(new.token)


def test_revoking_the_entitlement_revokes_every_license(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    first = service.issue_license(session, keyring, settings, e)
    second = service.issue_license(session, keyring, settings, e)
    signed = service.revocation_list(session, keyring, settings)
    assert signed.claims["revoked"] == []
    entitlements.revoke(session, entitlement=e, actor=shop.owner, reason="refund")
    for document in (first, second):
        session.refresh(document)
        assert document.revoked_at is not None and document.revocation_reason == "refund"
    with pytest.raises(Conflict):
        service.current_license(session, keyring, settings, e)
    with pytest.raises(Conflict):
        service.issue_license(session, keyring, settings, e)
    # This process revoked: its cached list is rebuilt at once.
    signed = service.revocation_list(session, keyring, settings)
    assert sorted(signed.claims["revoked"]) == sorted([str(first.id), str(second.id)])
    verifier = verifier_for(session, keyring, settings)
    result = verifier.verify(first.token, revocations=signed.jws)
    assert result.verdict == "revoked"


def test_suspended_entitlement_keeps_its_last_license_but_gets_no_new_one(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    with_license = service.current_license(session, keyring, settings, e)
    entitlements.set_status(
        session, entitlement=e, status="suspended", reason="past due", signer=None
    )
    assert service.current_license(session, keyring, settings, e).id == with_license.id
    other = entitlements.create_entitlement(
        session, tier=e.tier, source="grant", account=make_account(session)
    )
    entitlements.set_status(session, entitlement=other, status="suspended", signer=None)
    with pytest.raises(Conflict, match="suspended"):
        service.current_license(session, keyring, settings, other)


def test_rotation_keeps_old_licenses_valid_until_the_key_is_retired(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    e = shop.entitlement
    old = service.issue_license(session, keyring, settings, e)
    rotated = keys.rotate(session, purpose="license", secret=settings.resolved_secret_key)
    keyring.invalidate()
    new = service.issue_license(session, keyring, settings, e)
    assert new.kid == rotated.kid != old.kid
    jwks = service.jwks(session, keyring, settings)
    assert {k["kid"] for k in jwks["keys"]} == {old.kid, new.kid}
    verifier = verify.Verifier(jwks)
    assert verifier.verify(old.token).valid and verifier.verify(new.token).valid
    keys.retire(session, kid=old.kid, token_ttl=settings.registry_token_ttl)
    jwks = service.jwks(session, keyring, settings)
    assert [k["kid"] for k in jwks["keys"]] == [new.kid]
    assert verify.Verifier(jwks).verify(old.token).verdict == "unknown_key"
    assert verify.Verifier(jwks).verify(new.token).valid


def test_revocation_list_is_signed_and_fresh(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    signed = service.revocation_list(session, keyring, settings)
    claims = signed.claims
    assert claims["iss"] == settings.public_url
    assert claims["next_update"] - claims["iat"] == 3600
    verifier = verifier_for(session, keyring, settings)
    crl = verifier.load_revocations(signed.jws)
    assert crl.revoked == frozenset() and not crl.is_stale(claims["iat"] + 10)
    # Licenses that expired long ago are left off.
    e = shop.entitlement
    document = service.issue_license(session, keyring, settings, e)
    document.revoked_at = utcnow()
    document.expires_at = utcnow() - timedelta(days=400)
    session.flush()
    assert service.revocation_list(session, keyring, settings, now=utcnow()).claims["revoked"] == []


def test_license_file(session: Session, keyring: KeyRing, settings: Settings, shop: Shop) -> None:
    document = service.issue_license(session, keyring, settings, shop.entitlement)
    filename, text = service.license_file(document)
    assert filename == f"acme-redis-ha-{str(document.id)[:8]}.lic"
    assert "# Product:     Redis HA (acme/redis-ha, image)" in text
    assert "# Licensee:    Cus Tomer" in text and "# Expires:     20" in text
    assert verify.extract_token(text) == document.token
    assert text.endswith(document.token + "\n")


def test_first_key_is_created_in_the_same_unit_of_work(
    session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    assert keys.current_key(session, "license") is None
    document = service.issue_license(session, keyring, settings, shop.entitlement)
    assert keys.current_key(session, "license").kid == document.kid  # type: ignore[union-attr]
    assert keyring.signer("license").kid == document.kid
    assert session.get(License, document.id) is not None
