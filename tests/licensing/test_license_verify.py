"""The standalone verifier: every way a license can fail, each with its own verdict."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from store.licensing import verify

NOW = 1_900_000_000
DAY = 86400


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def enc(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def jwk(key: ed25519.Ed25519PrivateKey, kid: str) -> dict[str, str]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(raw), "kid": kid, "alg": "EdDSA", "use": "sig"}


def forge(
    key: ed25519.Ed25519PrivateKey,
    payload: dict[str, Any],
    *,
    kid: str = "lic-a",
    typ: str = verify.LICENSE_TYP,
    **header: Any,
) -> str:
    head = enc({"alg": "EdDSA", "typ": typ, "kid": kid, **header})
    body = enc(payload)
    return f"{head}.{body}.{b64(key.sign(f'{head}.{body}'.encode()))}"


def claims(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "v": 1,
        "lid": "4b0d6c1e-0000-4000-8000-000000000001",
        "iss": "https://store.example",
        "sub": {"type": "account", "id": "a1", "name": "Cus Tomer"},
        "product": {"id": "p1", "repository": "acme/redis-ha", "kind": "image", "title": "R"},
        "tier": {"slug": "pro", "name": "Pro"},
        "features": ["sso"],
        "seats": 5,
        "iat": NOW - DAY,
        "nbf": NOW - DAY,
        "exp": NOW + 30 * DAY,
        "ent": "e1",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture(scope="module")
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def verifier(key: ed25519.Ed25519PrivateKey) -> verify.Verifier:
    return verify.Verifier({"keys": [jwk(key, "lic-a")]})


def test_round_trip(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    result = verifier.verify(forge(key, claims()), now=NOW)
    assert result.verdict == "valid" and result.valid and result.usable
    assert result.claims == claims() and result.kid == "lic-a"
    assert result.license_id == claims()["lid"]


def test_one_shot_function_and_perpetual(key: ed25519.Ed25519PrivateKey) -> None:
    token = forge(key, claims(exp=None))
    result = verify.verify_license(token, {"keys": [jwk(key, "lic-a")]}, now=NOW + 999 * DAY)
    assert result.valid and result.reason == "perpetual"


def test_tampered_payload(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    head, _, sig = forge(key, claims()).split(".")
    tampered = f"{head}.{enc(claims(seats=500))}.{sig}"
    result = verifier.verify(tampered, now=NOW)
    assert result.verdict == "bad_signature" and result.claims is None


def test_tampered_header_or_signature(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    head, body, sig = forge(key, claims()).split(".")
    other_head = enc({"alg": "EdDSA", "typ": verify.LICENSE_TYP, "kid": "lic-a", "x": 1})
    assert verifier.verify(f"{other_head}.{body}.{sig}", now=NOW).verdict == "bad_signature"
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert verifier.verify(f"{head}.{body}.{flipped}", now=NOW).verdict == "bad_signature"
    assert verifier.verify(f"{head}.{body}.!!", now=NOW).verdict == "bad_signature"


def test_wrong_key_same_kid(verifier: verify.Verifier) -> None:
    impostor = ed25519.Ed25519PrivateKey.generate()
    result = verifier.verify(forge(impostor, claims()), now=NOW)
    assert result.verdict == "bad_signature" and "does not verify" in result.reason


def test_unknown_kid(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    result = verifier.verify(forge(key, claims(), kid="lic-unknown"), now=NOW)
    assert result.verdict == "unknown_key" and "lic-unknown" in result.reason


def test_alg_none_is_refused(verifier: verify.Verifier) -> None:
    token = f"{enc({'alg': 'none', 'typ': verify.LICENSE_TYP, 'kid': 'lic-a'})}.{enc(claims())}."
    result = verifier.verify(token, now=NOW)
    assert result.verdict == "unsupported_alg" and "'none'" in result.reason


def test_hs256_keyed_with_the_public_key_is_refused(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    # The classic confusion: an HMAC whose secret is the published public key.
    public = key.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        jwk(key, "lic-a")["x"].encode(),
    ):
        head = enc({"alg": "HS256", "typ": verify.LICENSE_TYP, "kid": "lic-a"})
        body = enc(claims())
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        result = verifier.verify(f"{head}.{body}.{b64(mac)}", now=NOW)
        assert result.verdict == "unsupported_alg"


@pytest.mark.parametrize("alg", ["ES256", "RS256", "eddsa", "Ed25519", None, ["EdDSA"]])
def test_every_other_alg_is_refused(verifier: verify.Verifier, alg: Any) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    head = enc({"alg": alg, "typ": verify.LICENSE_TYP, "kid": "lic-a"})
    body = enc(claims())
    sig = ec_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    assert verifier.verify(f"{head}.{body}.{b64(sig)}", now=NOW).verdict == "unsupported_alg"


def test_expired(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    result = verifier.verify(forge(key, claims(exp=NOW - DAY)), now=NOW)
    assert result.verdict == "expired" and not result.usable and "expired at" in result.reason
    assert result.claims is not None  # still shown: the signature was good


def test_not_yet_valid(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    result = verifier.verify(forge(key, claims(nbf=NOW + DAY)), now=NOW)
    assert result.verdict == "not_yet_valid" and "valid from" in result.reason


def test_in_grace(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    token = forge(key, claims(exp=NOW - DAY, grace_until=NOW + DAY))
    result = verifier.verify(token, now=NOW)
    assert result.verdict == "in_grace" and result.usable and not result.valid
    assert "grace period" in result.reason
    assert verifier.verify(token, now=NOW + 2 * DAY).verdict == "expired"


def test_leeway_absorbs_small_clock_skew(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    assert verifier.verify(forge(key, claims(nbf=NOW + 30)), now=NOW).valid
    assert verifier.verify(forge(key, claims(exp=NOW - 30)), now=NOW).valid
    assert verifier.verify(forge(key, claims(exp=NOW - 61)), now=NOW).verdict == "expired"
    strict = verify.Verifier({"keys": [jwk(key, "lic-a")]}, leeway=0)
    assert strict.verify(forge(key, claims(nbf=NOW + 30)), now=NOW).verdict == "not_yet_valid"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", f"{b64(b'[1]')}.e30.c2ln", "x" * 20000],
)
def test_malformed_tokens(verifier: verify.Verifier, token: str) -> None:
    assert verifier.verify(token, now=NOW).verdict == "malformed"


@pytest.mark.parametrize(
    ("header", "payload", "fragment"),
    [
        ({"typ": "JWT"}, claims(), "type"),
        ({"typ": verify.REVOCATIONS_TYP}, claims(), "type"),
        ({"crit": ["exp"]}, claims(), "critical"),
        ({}, claims(v=0), "version"),
        ({}, claims(v="1"), "version"),
        ({}, {k: v for k, v in claims().items() if k != "lid"}, "lacks lid"),
        ({}, claims(exp="tomorrow"), "exp must be"),
    ],
)
def test_malformed_headers_and_payloads(
    key: ed25519.Ed25519PrivateKey,
    verifier: verify.Verifier,
    header: dict[str, Any],
    payload: dict[str, Any],
    fragment: str,
) -> None:
    result = verifier.verify(forge(key, payload, **header), now=NOW)
    assert result.verdict == "malformed" and fragment in result.reason


def test_missing_kid_is_malformed(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    head = enc({"alg": "EdDSA", "typ": verify.LICENSE_TYP})
    body = enc(claims())
    token = f"{head}.{body}.{b64(key.sign(f'{head}.{body}'.encode()))}"
    assert verifier.verify(token, now=NOW).verdict == "malformed"


def test_unknown_fields_and_later_versions_are_accepted(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    token = forge(key, claims(v=2, nodes=3, region={"eu": True}))
    result = verifier.verify(token, now=NOW)
    assert result.valid and result.claims is not None and result.claims["nodes"] == 3


def test_issuer_pinning(key: ed25519.Ed25519PrivateKey) -> None:
    keys = {"keys": [jwk(key, "lic-a")]}
    token = forge(key, claims())
    assert verify.Verifier(keys, issuer="https://store.example").verify(token, now=NOW).valid
    other = verify.Verifier(keys, issuer="https://elsewhere").verify(token, now=NOW)
    assert other.verdict == "malformed" and "elsewhere" in other.reason


def test_jwks_entries_that_are_not_ed25519_are_ignored(key: ed25519.Ed25519PrivateKey) -> None:
    entries: list[Any] = [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "lic-a"},
        {**jwk(key, "lic-b"), "alg": "ES256"},
        {**jwk(key, "lic-c"), "use": "enc"},
        {**jwk(key, "lic-d"), "x": "not base64!"},
        "junk",
        jwk(key, "lic-e"),
    ]
    verifier = verify.Verifier(entries)  # a bare list of keys is accepted too
    assert set(verifier.keys) == {"lic-e"}
    assert verifier.verify(forge(key, claims()), now=NOW).verdict == "unknown_key"


# --- revocation lists --------------------------------------------------------------------------


def crl(key: ed25519.Ed25519PrivateKey, revoked: list[str], **overrides: Any) -> str:
    payload = {
        "v": 1,
        "iss": "https://store.example",
        "iat": NOW - 60,
        "next_update": NOW + 3600,
        "revoked": revoked,
        **overrides,
    }
    return forge(key, payload, typ=verify.REVOCATIONS_TYP)


def test_revoked(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    token = forge(key, claims())
    result = verifier.verify(token, now=NOW, revocations=crl(key, [claims()["lid"]]))
    assert result.verdict == "revoked" and not result.usable and "revocation list" in result.reason
    assert verifier.verify(token, now=NOW, revocations=crl(key, ["someone-else"])).valid


def test_revocation_beats_grace_and_expiry(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    token = forge(key, claims(exp=NOW - DAY, grace_until=NOW + DAY))
    result = verifier.verify(token, now=NOW, revocations=crl(key, [claims()["lid"]]))
    assert result.verdict == "revoked"


def test_revocation_list_signature_is_checked(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    impostor = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(verify.RevocationListError, match="does not verify"):
        verifier.verify(forge(key, claims()), now=NOW, revocations=crl(impostor, []))
    with pytest.raises(verify.RevocationListError, match="not among the trusted keys"):
        verifier.load_revocations(forge(key, {"revoked": []}, kid="x", typ=verify.REVOCATIONS_TYP))
    # A license is not a revocation list, nor the other way round.
    with pytest.raises(verify.RevocationListError, match="type"):
        verifier.load_revocations(forge(key, claims()), now=NOW)
    assert verifier.verify(crl(key, []), now=NOW).verdict == "malformed"
    with pytest.raises(verify.RevocationListError, match="malformed"):
        verifier.load_revocations(crl(key, "all"), now=NOW)  # type: ignore[arg-type]


def test_stale_revocation_list_warns_then_fails(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    token, lists = forge(key, claims()), crl(key, [])
    fresh = verifier.verify(token, now=NOW, revocations=lists)
    assert fresh.valid and fresh.warnings == ()
    stale = verifier.verify(token, now=NOW + 2 * 3600, revocations=lists)
    assert stale.valid and "due for an update" in stale.warnings[0]
    with pytest.raises(verify.RevocationListError, match="too old"):
        verifier.verify(token, now=NOW + 8 * DAY, revocations=lists)


def test_revocation_list_of_another_issuer_is_not_applied(
    key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier
) -> None:
    lists = crl(key, [claims()["lid"]], iss="https://other.example")
    result = verifier.verify(forge(key, claims()), now=NOW, revocations=lists)
    assert result.valid and "other.example" in result.warnings[0]


# --- files and the module's own constraints -------------------------------------------------


def test_extract_token_from_license_file(key: ed25519.Ed25519PrivateKey, tmp_path: Path) -> None:
    token = forge(key, claims())
    text = f"# Store license.\n# Product:  Redis HA (acme/redis-ha)\n# Issuer: a.b.c\n\n{token}\n"
    assert verify.extract_token(text) == token
    assert verify.extract_token(f"  {token}  ") == token
    path = tmp_path / "x.lic"
    path.write_text(text)
    assert verify.read_license(str(path)) == token
    with pytest.raises(ValueError):
        verify.extract_token("# only a header\n")


def test_verifier_depends_on_stdlib_and_cryptography_only() -> None:
    import sys

    source = Path(verify.__file__).read_text()
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - {"cryptography"} <= set(sys.stdlib_module_names), roots


def test_verified_cache_rechecks_dates_and_never_leaks_to_other_tokens(
    key: ed25519.Ed25519PrivateKey,
) -> None:
    cached = verify.Verifier({"keys": [jwk(key, "lic-a")]}, cache_size=2)
    token = forge(key, claims())
    assert cached.verify(token, now=NOW).valid
    assert cached.verify(token, now=NOW).valid  # from the cache
    assert cached.verify(token, now=NOW + 60 * DAY).verdict == "expired"
    head, _body, sig = token.split(".")
    assert cached.verify(f"{head}.{enc(claims(seats=9))}.{sig}", now=NOW).verdict == (
        "bad_signature"
    )
    for n in range(5):  # the cache stays bounded
        assert cached.verify(forge(key, claims(seats=n)), now=NOW).valid
    assert len(cached._verified) <= 2


def test_base64url_is_strict(key: ed25519.Ed25519PrivateKey, verifier: verify.Verifier) -> None:
    head, body, sig = forge(key, claims()).split(".")
    assert verifier.verify(f"{head}.{body[:10]}!{body[10:]}.{sig}", now=NOW).verdict == "malformed"
    assert verifier.verify(f"{head}.{body}=.{sig}", now=NOW).verdict == "malformed"
    assert verifier.verify(f"{head}=.{body}.{sig}", now=NOW).verdict == "malformed"
    assert verifier.verify(f"{head}.{body}.{sig}=", now=NOW).verdict == "bad_signature"
    assert verifier.verify(f"{head}.{body}.{sig}", now=NOW).valid
