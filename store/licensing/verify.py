"""Offline verification of Store license documents.

This module depends on the standard library and ``cryptography`` only, so a product can copy
it into its own source tree and check its license without calling the store.

A license is a compact JWS (RFC 7515) signed with Ed25519 (``alg`` "EdDSA", RFC 8037). Its
header names the signing key (``kid``); the store publishes its public keys as a JWKS at
``<store>/.well-known/jwks.json`` and a signed revocation list at
``<store>/licenses/revocations``. Payload fields are only ever added, never renamed or
removed; this verifier ignores fields it does not know.

Example (``jwks.json`` and ``revocations.json`` downloaded once from the store and shipped
or cached with the product)::

    >>> import json, pathlib
    >>> from verify import Verifier, read_license
    >>> verifier = Verifier(json.loads(pathlib.Path("jwks.json").read_text()))
    >>> crl = json.loads(pathlib.Path("revocations.json").read_text())["jws"]
    >>> result = verifier.verify(read_license("product.lic"), revocations=crl)
    >>> if not result.usable:
    ...     raise SystemExit(f"license {result.verdict}: {result.reason}")
    >>> result.claims["tier"]["slug"], result.claims.get("features", [])
    ('pro', ['sso', 'backup'])

``result.verdict`` is one of the ``VERDICT_*`` constants below. ``result.valid`` is true for
``valid`` only; ``result.usable`` also accepts ``in_grace`` (the license ended but its grace
period has not: keep working and tell the user to renew).

Revocation list policy: the list is itself a JWS signed by a key of the same JWKS, with
``iss``, ``isid``, ``iat``, ``next_update`` and ``revoked`` (license ids). A list applies to
a license of the same issuer: the same stable issuer id (``isid``, which a store keeps when
its public URL changes; a license without one takes the ``issuer_id`` its JWKS names), else
the same ``iss``. A list that is past its
``next_update`` is still applied (it holds every revocation up to its ``iat``) and the result
carries a warning; a list more than ``max_revocation_staleness`` seconds (default 7 days)
past ``next_update``, or one whose signature does not verify, raises
:class:`RevocationListError`: refresh it from the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "LICENSE_TYP",
    "REVOCATIONS_TYP",
    "RevocationList",
    "RevocationListError",
    "VerificationResult",
    "Verifier",
    "extract_token",
    "read_license",
    "verify_license",
]

ALG = "EdDSA"
LICENSE_TYP = "store-license+jws"
REVOCATIONS_TYP = "store-revocations+jws"
DEFAULT_LEEWAY = 60  # seconds of clock skew tolerated on nbf / exp / grace_until
DEFAULT_MAX_STALENESS = 7 * 24 * 3600

VERDICT_VALID = "valid"
VERDICT_IN_GRACE = "in_grace"
VERDICT_EXPIRED = "expired"
VERDICT_NOT_YET_VALID = "not_yet_valid"
VERDICT_REVOKED = "revoked"
VERDICT_BAD_SIGNATURE = "bad_signature"
VERDICT_UNKNOWN_KEY = "unknown_key"
VERDICT_MALFORMED = "malformed"
VERDICT_UNSUPPORTED_ALG = "unsupported_alg"

_REQUIRED_CLAIMS = ("v", "lid", "iss", "iat", "nbf")
_MAX_TOKEN_LENGTH = 16 * 1024


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of one verification.

    ``claims`` is the decoded payload, set only once the signature has verified (never for
    ``malformed``, ``unsupported_alg``, ``unknown_key`` or ``bad_signature``).
    """

    verdict: str
    reason: str
    claims: dict[str, Any] | None = None
    kid: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.verdict == VERDICT_VALID

    @property
    def usable(self) -> bool:
        """Valid, or expired but still inside its grace period."""
        return self.verdict in (VERDICT_VALID, VERDICT_IN_GRACE)

    @property
    def license_id(self) -> str | None:
        return None if self.claims is None else self.claims.get("lid")


class RevocationListError(ValueError):
    """The revocation list cannot be trusted (bad signature, unknown key, malformed, too stale)."""


@dataclass(frozen=True)
class RevocationList:
    issuer: str
    issued_at: int
    next_update: int
    revoked: frozenset[str]
    kid: str
    claims: dict[str, Any] = field(default_factory=dict, repr=False)

    def is_stale(self, now: float) -> bool:
        return now > self.next_update

    @property
    def issuer_id(self) -> str | None:
        """The issuer's stable id (``isid``), which survives a change of its public URL."""
        value = self.claims.get("isid")
        return value if isinstance(value, str) else None


# --- encoding helpers ---------------------------------------------------------------------


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64decode(segment: str) -> bytes:
    # Strict base64url without padding, as JWS requires (the standard decoder would skip
    # characters outside the alphabet).
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64decode_json(segment: str) -> Any:
    return json.loads(_b64decode(segment))


def extract_token(text: str) -> str:
    """The compact JWS in ``text``: a bare token, or a ``.lic`` file (a readable header, then
    the token on a line of its own). The header is for people only and is never trusted."""
    candidates = [line.strip() for line in text.strip().splitlines()]
    for line in reversed(candidates):
        if line.count(".") == 2 and " " not in line and not line.startswith("#"):
            return line
    raise ValueError("no license token found")


def read_license(path: str) -> str:
    """The token of a ``.lic`` file (or of a file holding just the token)."""
    with open(path, encoding="utf-8") as fh:
        return extract_token(fh.read())


# --- keys -----------------------------------------------------------------------------------


def _load_keys(
    jwks: Mapping[str, Any] | Iterable[Mapping[str, Any]],
) -> dict[str, Ed25519PublicKey]:
    entries = jwks.get("keys", []) if isinstance(jwks, Mapping) else list(jwks)
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in entries:
        if not isinstance(jwk, Mapping):
            continue
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        if jwk.get("alg", ALG) != ALG or jwk.get("use", "sig") != "sig":
            continue
        kid, x = jwk.get("kid"), jwk.get("x")
        if not isinstance(kid, str) or not isinstance(x, str):
            continue
        try:
            raw = _b64decode(x)
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, binascii.Error):
            continue
    return keys


@dataclass(frozen=True)
class _Checked:
    """A token whose header and signature checked out."""

    kid: str
    payload: dict[str, Any]


class _Rejected(Exception):
    def __init__(self, verdict: str, reason: str, kid: str | None = None) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason
        self.kid = kid


class Verifier:
    """Verifies licenses against a JWKS; build it once and reuse it (keys are parsed once).

    ``issuer``: when given, a license (and revocation list) must name exactly this ``iss``.
    ``leeway``: seconds of clock skew tolerated on every time check.
    ``cache_size``: remember this many licenses whose signature verified, so that checking
    the same token again skips the signature (dates and revocation are always re-checked).
    """

    def __init__(
        self,
        jwks: Mapping[str, Any] | Iterable[Mapping[str, Any]],
        *,
        issuer: str | None = None,
        issuer_id: str | None = None,
        leeway: int = DEFAULT_LEEWAY,
        max_revocation_staleness: int = DEFAULT_MAX_STALENESS,
        cache_size: int = 0,
    ) -> None:
        self.keys = _load_keys(jwks)
        self.issuer = issuer
        # The store's JWKS names its issuer id: every key in it speaks for that issuer.
        named = jwks.get("issuer_id") if isinstance(jwks, Mapping) else None
        self.issuer_id = issuer_id or (named if isinstance(named, str) and named else None)
        self.leeway = leeway
        self.max_revocation_staleness = max_revocation_staleness
        self._revocations: dict[str, RevocationList] = {}
        self._headers: dict[str, dict[str, Any]] = {}
        self._cache_size = cache_size
        self._verified: dict[str, _Checked] = {}

    # -- signatures --

    def _header(self, segment: str) -> dict[str, Any]:
        # A store uses a handful of distinct headers (one per key), so decoded ones are kept.
        header = self._headers.get(segment)
        if header is not None:
            return header
        try:
            header = _b64decode_json(segment)
        except (ValueError, binascii.Error):
            raise _Rejected(VERDICT_MALFORMED, "the header is not base64url JSON") from None
        if not isinstance(header, dict):
            raise _Rejected(VERDICT_MALFORMED, "the header is not a JSON object")
        if len(self._headers) >= 32:
            self._headers.clear()
        self._headers[segment] = header
        return header

    def _check(self, token: str, typ: str) -> _Checked:
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
            raise _Rejected(VERDICT_MALFORMED, "not a license token")
        parts = token.strip().split(".")
        if len(parts) != 3 or not all(parts[:2]):
            raise _Rejected(VERDICT_MALFORMED, "not a compact JWS (three dot-separated parts)")
        if not _B64URL.fullmatch(parts[1]):
            raise _Rejected(VERDICT_MALFORMED, "the payload is not base64url")
        header = self._header(parts[0])
        # The algorithm is fixed, never taken from the token: "none", HS256 keyed with the
        # public key and every other algorithm are refused before any key is looked at.
        alg = header.get("alg")
        if alg != ALG:
            raise _Rejected(
                VERDICT_UNSUPPORTED_ALG, f"algorithm {alg!r} is not accepted (EdDSA only)"
            )
        if "crit" in header:
            raise _Rejected(VERDICT_MALFORMED, "critical header parameters are not supported")
        if header.get("typ") != typ:
            raise _Rejected(VERDICT_MALFORMED, f"type {header.get('typ')!r} is not {typ!r}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _Rejected(VERDICT_MALFORMED, "the header names no key (kid)")
        key = self.keys.get(kid)
        if key is None:
            raise _Rejected(VERDICT_UNKNOWN_KEY, f"key {kid} is not among the trusted keys", kid)
        try:
            signature = _b64decode(parts[2])
        except (ValueError, binascii.Error):
            raise _Rejected(VERDICT_BAD_SIGNATURE, "the signature is not base64url", kid) from None
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except InvalidSignature:
            raise _Rejected(VERDICT_BAD_SIGNATURE, "the signature does not verify", kid) from None
        try:
            payload = _b64decode_json(parts[1])
        except (ValueError, binascii.Error):
            raise _Rejected(VERDICT_MALFORMED, "the payload is not base64url JSON", kid) from None
        if not isinstance(payload, dict):
            raise _Rejected(VERDICT_MALFORMED, "the payload is not a JSON object", kid)
        if self.issuer is not None and payload.get("iss") != self.issuer:
            raise _Rejected(
                VERDICT_MALFORMED, f"issued by {payload.get('iss')!r}, not {self.issuer!r}", kid
            )
        return _Checked(kid, payload)

    # -- revocation lists --

    def load_revocations(self, jws: str, *, now: float | None = None) -> RevocationList:
        """Check a revocation list's signature and freshness (see the module's policy)."""
        cached = self._revocations.get(jws)
        if cached is None:
            try:
                checked = self._check(jws, REVOCATIONS_TYP)
            except _Rejected as exc:
                raise RevocationListError(f"revocation list rejected: {exc.reason}") from None
            claims = checked.payload
            revoked, iat, nxt = claims.get("revoked"), claims.get("iat"), claims.get("next_update")
            if (
                not isinstance(revoked, list)
                or not all(isinstance(x, str) for x in revoked)
                or not _is_int(iat)
                or not _is_int(nxt)
                or not isinstance(claims.get("iss"), str)
                or not isinstance(claims.get("isid", ""), str)
            ):
                raise RevocationListError("revocation list rejected: malformed payload")
            cached = RevocationList(
                issuer=claims["iss"],
                issued_at=iat,
                next_update=nxt,
                revoked=frozenset(revoked),
                kid=checked.kid,
                claims=claims,
            )
            if len(self._revocations) > 8:
                self._revocations.clear()
            self._revocations[jws] = cached
        now = time.time() if now is None else now
        if now > cached.next_update + self.max_revocation_staleness:
            raise RevocationListError(
                f"revocation list is too old (next update was due at {_iso(cached.next_update)}); "
                "fetch a fresh one"
            )
        return cached

    def _same_issuer(self, crl: RevocationList, claims: Mapping[str, Any]) -> bool:
        """Whether a revocation list speaks for the license's issuer: by the stable issuer
        id when both are known (a license from before a change of public URL still meets
        the lists of the new one), else by the issuer URL."""
        license_isid, crl_isid = _issuer_of(self, claims), _issuer_of(self, crl.claims)
        if license_isid is not None and crl_isid is not None:
            return license_isid == crl_isid
        return crl.issuer == claims["iss"]

    # -- licenses --

    def verify(
        self,
        token: str,
        *,
        now: float | None = None,
        revocations: str | RevocationList | None = None,
    ) -> VerificationResult:
        """Verify one license token (see the module docstring for verdicts and policy).

        Raises :class:`RevocationListError` only when ``revocations`` is given and cannot be
        trusted; every problem with the license itself is a verdict.
        """
        now = time.time() if now is None else now
        crl = (
            self.load_revocations(revocations, now=now)
            if isinstance(revocations, str)
            else revocations
        )
        checked = self._verified.get(token) if self._cache_size else None
        if checked is None:
            try:
                checked = self._check(token, LICENSE_TYP)
            except _Rejected as exc:
                return VerificationResult(exc.verdict, exc.reason, kid=exc.kid)
            if self._cache_size:
                if len(self._verified) >= self._cache_size:
                    self._verified.clear()
                self._verified[token] = checked
        claims, kid = checked.payload, checked.kid
        problem = _claims_problem(claims)
        if problem:
            return VerificationResult(VERDICT_MALFORMED, problem, kid=kid)
        warnings: list[str] = []
        isid = claims.get("isid") if isinstance(claims.get("isid"), str) else None
        if isid is not None and self.issuer_id is not None and isid != self.issuer_id:
            return VerificationResult(
                VERDICT_MALFORMED, f"issuer id {isid!r} is not {self.issuer_id!r}", kid=kid
            )
        if crl is not None:
            if not self._same_issuer(crl, claims):
                warnings.append(f"the revocation list is from {crl.issuer}, not {claims['iss']}")
            else:
                if crl.is_stale(now):
                    warnings.append(
                        f"the revocation list was due for an update at {_iso(crl.next_update)}"
                    )
                if claims["lid"] in crl.revoked:
                    return VerificationResult(
                        VERDICT_REVOKED,
                        f"license {claims['lid']} is on the revocation list of "
                        f"{_iso(crl.issued_at)}",
                        claims,
                        kid,
                        tuple(warnings),
                    )
        return _time_verdict(claims, kid, now, self.leeway, tuple(warnings))


def _issuer_of(verifier: Verifier, claims: Mapping[str, Any]) -> str | None:
    isid = claims.get("isid")
    return isid if isinstance(isid, str) else verifier.issuer_id


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _claims_problem(claims: dict[str, Any]) -> str | None:
    missing = [name for name in _REQUIRED_CLAIMS if name not in claims]
    if missing:
        return f"the payload lacks {', '.join(missing)}"
    # Versions only ever add fields, so any version from 1 up is readable here.
    if not _is_int(claims["v"]) or claims["v"] < 1:
        return f"unknown payload version {claims['v']!r}"
    if not isinstance(claims["lid"], str) or not isinstance(claims["iss"], str):
        return "lid and iss must be strings"
    if "isid" in claims and not isinstance(claims["isid"], str):
        return "isid must be a string"
    for name in ("iat", "nbf", "exp", "grace_until"):
        if name in claims and not _is_int(claims[name]):
            return f"{name} must be an integer timestamp"
    return None


def _time_verdict(
    claims: dict[str, Any], kid: str, now: float, leeway: int, warnings: tuple[str, ...]
) -> VerificationResult:
    if now + leeway < claims["nbf"]:
        return VerificationResult(
            VERDICT_NOT_YET_VALID, f"valid from {_iso(claims['nbf'])}", claims, kid, warnings
        )
    exp = claims.get("exp")
    if exp is not None and now - leeway >= exp:
        grace = claims.get("grace_until")
        if grace is not None and now - leeway < grace:
            return VerificationResult(
                VERDICT_IN_GRACE,
                f"expired at {_iso(exp)}; in its grace period until {_iso(grace)}",
                claims,
                kid,
                warnings,
            )
        return VerificationResult(VERDICT_EXPIRED, f"expired at {_iso(exp)}", claims, kid, warnings)
    reason = "perpetual" if exp is None else f"valid until {_iso(exp)}"
    return VerificationResult(VERDICT_VALID, reason, claims, kid, warnings)


def verify_license(
    token: str,
    jwks: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    *,
    now: float | None = None,
    revocations: str | None = None,
    issuer: str | None = None,
    leeway: int = DEFAULT_LEEWAY,
) -> VerificationResult:
    """One-shot verification; build a :class:`Verifier` to verify many tokens."""
    verifier = Verifier(jwks, issuer=issuer, leeway=leeway)
    return verifier.verify(token, now=now, revocations=revocations)
