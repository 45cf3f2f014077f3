"""Checking a publisher's signature over the "simple signing" payload of an image digest.

The payload is the JSON that containers/image and cosign sign::

    {"critical": {"identity": {"docker-reference": "<host>/<ns>/<repo>"},
                  "image": {"docker-manifest-digest": "sha256:<64 hex>"},
                  "type": "cosign container image signature"},
     "optional": {...}}

The signature covers the exact payload bytes: ECDSA P-256 with SHA-256 (an ASN.1 DER
signature, as cosign writes it) or Ed25519. Nothing here touches the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from store.errors import ValidationFailed

SIGNATURE_TYPE = "cosign container image signature"
ALGORITHMS = ("ecdsa-p256", "ed25519")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_PAYLOAD = 64 * 1024
MAX_PEM = 8 * 1024

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class SignatureRejected(ValidationFailed):
    """An uploaded signature the store does not accept; ``code`` says why."""

    code = "signature_rejected"


@dataclass(frozen=True)
class LoadedKey:
    alg: str
    key: PublicKey
    fingerprint: str
    pem: str


def fingerprint(key: PublicKey) -> str:
    """SHA-256 over the DER SubjectPublicKeyInfo, lowercase hex (64 characters)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def algorithm_of(key: object) -> str:
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ecdsa-p256"
        raise ValidationFailed(
            f"ECDSA keys must use the P-256 curve, not {key.curve.name}", code="unsupported_key"
        )
    raise ValidationFailed(
        "Only ECDSA P-256 and Ed25519 keys are supported", code="unsupported_key"
    )


def load_public_key(pem: str) -> LoadedKey:
    """A PEM public key (SubjectPublicKeyInfo), checked to be ECDSA P-256 or Ed25519."""
    text = (pem or "").strip()
    if not text or len(text) > MAX_PEM:
        raise ValidationFailed("Paste a PEM public key", code="bad_key")
    if "PRIVATE KEY" in text:
        raise ValidationFailed(
            "This is a private key: upload only the public half", code="private_key"
        )
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationFailed("This is not a PEM public key", code="bad_key") from None
    alg = algorithm_of(key)
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    normalized = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return LoadedKey(alg, key, fingerprint(key), normalized)


def load_private_key(data: bytes, password: bytes | None = None) -> PrivateKey:
    """A PEM private key file (PKCS#8 or SEC1), for the signing CLI."""
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValidationFailed(f"The key file could not be read: {exc}", code="bad_key") from None
    algorithm_of(key)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    return key


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_payload(
    docker_reference: str, digest: str, optional: dict[str, Any] | None = None
) -> bytes:
    """The simple-signing payload for one digest, as cosign writes it."""
    body = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": optional or None,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sign(key: PrivateKey, payload: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(payload)
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def b64decode(value: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise SignatureRejected(f"The {what} is not valid base64", code="bad_encoding") from None


def check_signature(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Claims:
    docker_reference: str
    digest: str
    optional: dict[str, Any] | None


def parse_payload(payload: bytes) -> Claims:
    """The claims of a simple-signing payload; SignatureRejected when it is not one."""
    if len(payload) > MAX_PAYLOAD:
        raise SignatureRejected("The payload is too large", code="bad_payload")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise SignatureRejected("The payload is not JSON", code="bad_payload") from None
    critical = body.get("critical") if isinstance(body, dict) else None
    if not isinstance(critical, dict):
        raise SignatureRejected("The payload has no 'critical' section", code="bad_payload")
    if critical.get("type") != SIGNATURE_TYPE:
        raise SignatureRejected(
            f"critical.type must be '{SIGNATURE_TYPE}'", code="bad_payload_type"
        )
    identity, image = critical.get("identity"), critical.get("image")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(reference, str) or not isinstance(digest, str):
        raise SignatureRejected(
            "The payload must name critical.identity.docker-reference and "
            "critical.image.docker-manifest-digest",
            code="bad_payload",
        )
    optional = body.get("optional")
    return Claims(reference, digest, optional if isinstance(optional, dict) else None)


def reference_matches(
    reference: str, *, repository: str, registry_host: str, tag: str | None
) -> bool:
    """Accepted: ``<repository>`` or ``<registry host>/<repository>``, optionally with
    ``:<tag>`` (which must then be the tag the upload names, if it names one)."""
    name, tagged = reference, None
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tagged = reference.rpartition(":")
    if tagged is not None and tag is not None and tagged != tag:
        return False
    candidates = {repository}
    if registry_host:
        candidates.add(f"{registry_host}/{repository}")
    return name in candidates


def verify(
    key: PublicKey,
    *,
    payload: bytes,
    signature: bytes,
    repository: str,
    digest: str,
    registry_host: str,
    tag: str | None = None,
) -> Claims:
    """Check that ``signature`` by ``key`` covers ``payload`` and that the payload names this
    repository and digest. Returns the claims; raises SignatureRejected with the reason."""
    if not DIGEST.match(digest):
        raise SignatureRejected("The digest must be sha256:<64 hex digits>", code="bad_digest")
    if not check_signature(key, payload, signature):
        raise SignatureRejected(
            "The signature does not verify with this key over this payload",
            code="bad_signature",
        )
    claims = parse_payload(payload)
    if claims.digest != digest:
        raise SignatureRejected(
            f"The payload signs {claims.digest}, not {digest}", code="wrong_digest"
        )
    if not reference_matches(
        claims.docker_reference, repository=repository, registry_host=registry_host, tag=tag
    ):
        raise SignatureRejected(
            f"The payload names {claims.docker_reference}, not {repository}",
            code="wrong_repository",
        )
    return claims
