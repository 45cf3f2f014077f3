"""Key material: generation, encryption at rest, key ids, certificates and compact JWS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_ENVELOPE_VERSION = "v1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- encryption at rest ---------------------------------------------------------------


def _wrapping_key(secret: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"store-signing-keys", info=b"aes-256-gcm v1"
    ).derive(secret.encode())


def encrypt_private_key(private_key: PrivateKey, secret: str) -> str:
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(12)
    sealed = AESGCM(_wrapping_key(secret)).encrypt(nonce, pem, b"store-signing-key")
    return f"{_ENVELOPE_VERSION}:{b64url(nonce + sealed)}"


def decrypt_private_key(envelope: str, secret: str) -> PrivateKey:
    version, _, body = envelope.partition(":")
    if version != _ENVELOPE_VERSION:
        raise ValueError(f"unknown key envelope version {version!r}")
    raw = b64url_decode(body)
    pem = AESGCM(_wrapping_key(secret)).decrypt(raw[:12], raw[12:], b"store-signing-key")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError("unsupported private key type")
    return key


# --- public keys and their ids ----------------------------------------------------------


def public_pem(key: PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_pem(pem: str) -> PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise ValueError("unsupported public key type")
    return key


def libtrust_kid(key: PublicKey) -> str:
    """docker/libtrust key id: SHA-256 of the DER SubjectPublicKeyInfo, first 30 bytes,
    base32 without padding, in 12 groups of 4 joined by ':' (what distribution expects)."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def public_jwk(key: PublicKey) -> dict[str, str]:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(key: PublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url)."""
    jwk = public_jwk(key)
    members = {k: jwk[k] for k in sorted(jwk) if k in ("crv", "kty", "x", "y")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def self_signed_certificate(private_key: ec.EllipticCurvePrivateKey, common_name: str) -> str:
    """A self-signed certificate for the registry's rootcertbundle (validity is not checked
    by distribution in kid mode; ten years keeps other tools quiet)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --- compact JWS ----------------------------------------------------------------------


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def sign_jws(private_key: PrivateKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    """Compact JWS with ES256 (raw r||s signature, as JOSE requires) or EdDSA."""
    signing_input = f"{b64url(_json(header))}.{b64url(_json(payload))}".encode()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        signature = private_key.sign(signing_input)
    else:
        der = private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode()}.{b64url(signature)}"


def verify_es256(
    public_key: ec.EllipticCurvePublicKey, signing_input: bytes, signature: bytes
) -> bool:
    from cryptography.exceptions import InvalidSignature

    if len(signature) != 64:
        return False
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
