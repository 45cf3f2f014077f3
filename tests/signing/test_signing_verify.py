"""Signature verification without the database: both key types, every rejection reason."""

from __future__ import annotations

import base64

import pytest

from store.errors import ValidationFailed
from store.signing import verify
from tests.signing.helpers import REGISTRY_HOST, digest_of, new_key, signed_body

REPO = "acme/app"
DIGEST = digest_of("v1")


def _check(body: dict[str, str], key: verify.PrivateKey, **over: object) -> verify.Claims:
    kwargs: dict[str, object] = {
        "payload": base64.b64decode(body["payload"]),
        "signature": base64.b64decode(body["signature"]),
        "repository": REPO,
        "digest": DIGEST,
        "registry_host": REGISTRY_HOST,
    }
    kwargs.update(over)
    public = verify.load_public_key(verify.public_pem(key)).key
    return verify.verify(public, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", verify.ALGORITHMS)
def test_round_trip(alg: str) -> None:
    key = new_key(alg)
    claims = _check(signed_body(key, REPO, DIGEST), key)
    assert claims.digest == DIGEST
    assert claims.docker_reference == f"{REGISTRY_HOST}/{REPO}"
    loaded = verify.load_public_key(verify.public_pem(key))
    assert loaded.alg == alg and len(loaded.fingerprint) == 64


@pytest.mark.parametrize("alg", verify.ALGORITHMS)
@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"digest": digest_of("other")}, "wrong_digest"),
        ({"repository": "acme/other"}, "wrong_repository"),
        ({"registry_host": "elsewhere:5000"}, "wrong_repository"),
        ({"digest": "sha256:nothex"}, "bad_digest"),
    ],
)
def test_claims_must_match(alg: str, change: dict[str, str], code: str) -> None:
    key = new_key(alg)
    with pytest.raises(verify.SignatureRejected) as err:
        _check(signed_body(key, REPO, DIGEST), key, **change)
    assert err.value.code == code


@pytest.mark.parametrize("alg", verify.ALGORITHMS)
def test_wrong_key_and_tampered_payload_are_rejected(alg: str) -> None:
    key, other = new_key(alg), new_key(alg)
    with pytest.raises(verify.SignatureRejected) as err:
        _check(signed_body(key, REPO, DIGEST), other)
    assert err.value.code == "bad_signature"
    with pytest.raises(verify.SignatureRejected) as err:
        _check(signed_body(key, REPO, DIGEST, tamper=True), key)
    assert err.value.code == "bad_signature"


def test_reference_forms() -> None:
    ok = verify.reference_matches
    assert ok(REPO, repository=REPO, registry_host=REGISTRY_HOST, tag=None)
    assert ok(f"{REGISTRY_HOST}/{REPO}", repository=REPO, registry_host=REGISTRY_HOST, tag=None)
    assert ok(f"{REGISTRY_HOST}/{REPO}:v1", repository=REPO, registry_host=REGISTRY_HOST, tag="v1")
    assert not ok(f"{REPO}:v2", repository=REPO, registry_host=REGISTRY_HOST, tag="v1")
    assert not ok("docker.io/acme/app", repository=REPO, registry_host=REGISTRY_HOST, tag=None)
    assert not ok("acme/app-evil", repository=REPO, registry_host=REGISTRY_HOST, tag=None)


def test_payload_shape_is_checked() -> None:
    for payload, code in (
        (b"not json", "bad_payload"),
        (b'{"critical": {"type": "something else"}}', "bad_payload_type"),
        (b'{"critical": {"type": "cosign container image signature"}}', "bad_payload"),
    ):
        with pytest.raises(verify.SignatureRejected) as err:
            verify.parse_payload(payload)
        assert err.value.code == code


def test_only_p256_and_ed25519_public_keys() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def pem(key: object) -> str:
        return (
            key.public_key()
            .public_bytes(  # type: ignore[attr-defined,no-any-return]
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    for bad in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)):
        with pytest.raises(ValidationFailed) as err:
            verify.load_public_key(pem(bad))
        assert err.value.code == "unsupported_key"
    private = new_key().private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValidationFailed) as err:
        verify.load_public_key(private.decode())
    assert err.value.code == "private_key"
    with pytest.raises(ValidationFailed):
        verify.load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")


def test_fingerprint_is_sha256_of_spki_der() -> None:
    import hashlib

    from cryptography.hazmat.primitives import serialization

    key = new_key()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert verify.fingerprint(key.public_key()) == hashlib.sha256(der).hexdigest()
