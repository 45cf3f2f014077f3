"""Registry bearer tokens: ES256 JWTs the registry verifies offline.

What distribution 2.8 demands (see the facts sheet): ``kid`` = libtrust fingerprint of a
certificate in its bundle, raw r||s signature, ``iss``/``aud`` equal to its issuer and
service, ``aud`` a plain string, integer times, unpadded base64url segments.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from store.keys import crypto
from store.keys.service import LoadedKey

_ECDSA = ec.ECDSA(hashes.SHA256())
_headers: dict[str, str] = {}  # kid -> encoded header, built once per key


@dataclass(frozen=True)
class IssuedJWT:
    token: str
    issued_at: datetime
    expires_in: int
    claims: dict[str, Any]


def _header(key: LoadedKey) -> str:
    encoded = _headers.get(key.kid)
    if encoded is None:
        encoded = crypto.b64url(orjson.dumps({"typ": "JWT", "alg": "ES256", "kid": key.kid}))
        _headers[key.kid] = encoded
    return encoded


def mint(
    key: LoadedKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    access: list[dict[str, Any]],
    ttl: int,
    not_after: int | None = None,
) -> IssuedJWT:
    """A signed token living ``ttl`` seconds, and never past ``not_after`` (Unix time: the
    end of the credential it was made from)."""
    if key.alg != "ES256" or not isinstance(key.private_key, ec.EllipticCurvePrivateKey):
        raise ValueError("registry tokens are signed with an ES256 key")
    now = time.time()
    iat = int(now)
    exp = iat + ttl if not_after is None else max(iat, min(iat + ttl, not_after))
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": exp,
        "nbf": iat - 5,  # a little slack for clocks; the registry adds 60 s of its own
        "iat": iat,
        "jti": secrets.token_hex(16),
        "access": access,
    }
    signing_input = f"{_header(key)}.{crypto.b64url(orjson.dumps(claims))}"
    r, s = decode_dss_signature(key.private_key.sign(signing_input.encode(), _ECDSA))
    signature = crypto.b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return IssuedJWT(
        token=f"{signing_input}.{signature}",
        issued_at=datetime.fromtimestamp(now, UTC),
        expires_in=exp - iat,
        claims=claims,
    )


# A token already signed for the same grant is handed out again for a few seconds (at most a
# tenth of its lifetime): every check of the request (credential, revocation, account,
# entitlement, rate limits) has run and allowed exactly the access that token carries, so
# it is the token a new signature would make but for its times and ``jti``. An ES256
# signature is the largest single cost of a token request.
REUSE_SECONDS = 5


class Reuse:
    """Tokens this process signed in the last few seconds, by key, issuer, audience,
    subject, access and lifetime (bounded: cleared when full)."""

    def __init__(self, seconds: float = REUSE_SECONDS, size: int = 4096) -> None:
        self.seconds = seconds
        self.size = size
        self._tokens: dict[tuple[Any, ...], tuple[float, IssuedJWT]] = {}

    def mint(
        self,
        key: LoadedKey,
        *,
        issuer: str,
        audience: str,
        subject: str,
        access: list[dict[str, Any]],
        ttl: int,
        not_after: int | None = None,
    ) -> IssuedJWT:
        """A token for this grant: one signed less than ``min(seconds, ttl / 10)`` ago,
        with ``expires_in`` what is left of its lifetime, or a new one."""
        window = min(self.seconds, ttl / 10)
        cache_key = (
            key.kid,
            id(key.private_key),
            issuer,
            audience,
            subject,
            orjson.dumps(access),
            ttl,
            not_after,
        )
        if window > 0 and (found := self._tokens.get(cache_key)) is not None:
            now = time.time()
            signed_at, issued = found
            if 0 <= now - signed_at < window:
                left = int(issued.claims["exp"] - now)
                return IssuedJWT(issued.token, issued.issued_at, left, issued.claims)
        issued = mint(
            key,
            issuer=issuer,
            audience=audience,
            subject=subject,
            access=access,
            ttl=ttl,
            not_after=not_after,
        )
        if window > 0:
            if len(self._tokens) >= self.size:
                self._tokens.clear()
            self._tokens[cache_key] = (issued.issued_at.timestamp(), issued)
        return issued

    def clear(self) -> None:
        self._tokens.clear()


_last_rfc3339: tuple[datetime, str] | None = None  # a reused token's time: formatted once


def rfc3339(moment: datetime) -> str:
    """``2026-11-28T17:44:00.269472Z``: the form Go's time parser accepts."""
    global _last_rfc3339
    last = _last_rfc3339
    if last is not None and last[0] is moment:
        return last[1]
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last_rfc3339 = (moment, text)
    return text


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a JWT, for tests and diagnostics (no signature check)."""
    header, payload, _ = token.split(".")
    return orjson.loads(crypto.b64url_decode(header)), orjson.loads(crypto.b64url_decode(payload))


def verify(token: str, public_key: crypto.PublicKey) -> dict[str, Any]:
    """The claims of a token signed by ``public_key``; ValueError if the signature is bad."""
    header, payload, signature = token.split(".")
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("not an ES256 key")
    if not crypto.verify_es256(
        public_key, f"{header}.{payload}".encode(), crypto.b64url_decode(signature)
    ):
        raise ValueError("bad signature")
    return dict(orjson.loads(crypto.b64url_decode(payload)))
