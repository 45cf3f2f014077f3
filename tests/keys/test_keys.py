"""The store's signing keys: encryption at rest, key ids, rotation and the key ring."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session, sessionmaker

from store.errors import Conflict, ValidationFailed
from store.keys import crypto, service

SECRET = "test-secret"


def test_private_keys_are_encrypted_at_rest(session: Session) -> None:
    key = service.create_key(session, purpose="license", secret=SECRET, activate=True)
    assert "PRIVATE KEY" not in key.private_pem_encrypted
    assert key.private_pem_encrypted.startswith("v1:")
    loaded = service.load(key, SECRET)
    assert crypto.public_pem(loaded.public_key) == key.public_pem
    with pytest.raises(InvalidTag):
        service.load(key, "another secret")


def test_registry_key_id_is_the_libtrust_fingerprint(session: Session, tmp_path: Path) -> None:
    key = service.create_key(session, purpose="registry", secret=SECRET, activate=True)
    assert key.alg == "ES256"
    (tmp_path / "pub.pem").write_text(key.public_pem)
    # The openssl pipeline from distribution's documentation.
    pipeline = (
        f"openssl pkey -pubin -in {tmp_path / 'pub.pem'} -outform DER | openssl dgst -sha256 -binary"
        " | head -c 30 | base32 -w0 | sed 's/=*$//; s/\\(....\\)/\\1:/g; s/:$//'"
    )
    expected = subprocess.run(
        pipeline, shell=True, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert key.kid == expected
    cert = x509.load_pem_x509_certificate(key.certificate_pem.encode())
    assert (
        cert.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        == key.public_pem
    )


def test_es256_jws_uses_raw_signatures(session: Session) -> None:
    key = service.load(
        service.create_key(session, purpose="registry", secret=SECRET, activate=True), SECRET
    )
    token = crypto.sign_jws(
        key.private_key, {"typ": "JWT", "alg": "ES256", "kid": key.kid}, {"sub": "x"}
    )
    header, payload, signature = token.split(".")
    assert "=" not in token
    assert json.loads(crypto.b64url_decode(header))["kid"] == key.kid
    raw = crypto.b64url_decode(signature)
    assert len(raw) == 64
    assert crypto.verify_es256(key.public_key, f"{header}.{payload}".encode(), raw)  # type: ignore[arg-type]
    assert not crypto.verify_es256(key.public_key, f"{header}.{payload}x".encode(), raw)  # type: ignore[arg-type]


def test_license_key_id_is_a_thumbprint(session: Session) -> None:
    key = service.create_key(session, purpose="license", secret=SECRET, activate=True)
    public = crypto.load_public_pem(key.public_pem)
    jwk = crypto.public_jwk(public)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":")
    )
    thumb = (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    )
    assert key.kid == "lic-" + thumb[:16]


def test_rotation_of_registry_keys_publishes_before_signing(session: Session) -> None:
    first = service.ensure_key(session, purpose="registry", secret=SECRET)
    assert service.ensure_key(session, purpose="registry", secret=SECRET).kid == first.kid
    new = service.rotate(session, purpose="registry", secret=SECRET)
    assert new.activated_at is None  # published in the bundle, not signing yet
    assert {k.kid for k in service.trusted_keys(session, "registry")} == {first.kid, new.kid}
    assert service.current_key(session, "registry").kid == first.kid  # type: ignore[union-attr]
    service.activate(session, kid=new.kid)
    assert service.current_key(session, "registry").kid == new.kid  # type: ignore[union-attr]
    with pytest.raises(Conflict, match="may still be in use"):
        service.retire(session, kid=first.kid, token_ttl=300)
    with pytest.raises(Conflict, match="signing now"):
        service.retire(session, kid=new.kid, token_ttl=300)
    service.retire(session, kid=first.kid, token_ttl=-120)
    assert [k.kid for k in service.trusted_keys(session, "registry")] == [new.kid]


def test_license_rotation_signs_at_once_and_keeps_old_keys_trusted(session: Session) -> None:
    first = service.ensure_key(session, purpose="license", secret=SECRET)
    new = service.rotate(session, purpose="license", secret=SECRET)
    assert service.current_key(session, "license").kid == new.kid  # type: ignore[union-attr]
    assert {k.kid for k in service.trusted_keys(session, "license")} == {first.kid, new.kid}


def test_unknown_purpose(session: Session) -> None:
    with pytest.raises(ValidationFailed):
        service.create_key(session, purpose="email", secret=SECRET, activate=True)


def test_key_ring_loads_once_and_follows_rotation(session_factory: sessionmaker[Session]) -> None:
    ring = service.KeyRing(lambda: session_factory, SECRET, refresh_seconds=0)
    first = ring.signer("license")
    assert ring.signer("license") is first  # same kid: not decrypted again
    with session_factory() as s:
        new = service.rotate(s, purpose="license", secret=SECRET)
        s.commit()
    assert ring.signer("license").kid == new.kid
    cached = service.KeyRing(lambda: session_factory, SECRET, refresh_seconds=3600)
    signer = cached.signer("registry")
    with session_factory() as s:
        service.rotate(s, purpose="registry", secret=SECRET, activate=True)
        s.commit()
    assert cached.signer("registry") is signer  # within the refresh window
    cached.invalidate()
    assert cached.signer("registry").kid != signer.kid
