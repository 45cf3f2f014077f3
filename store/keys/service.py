"""The store's signing keys: creation, rotation, retirement, and a per-process key ring.

Purposes:
- ``registry``: ES256 (P-256) keys that sign registry bearer tokens. The registry trusts a
  bundle of self-signed certificates and reads it only at start, so a new key is first
  *published* (in the bundle) and only later *activated* (signs).
- ``license``: Ed25519 keys that sign license documents. A new key signs at once; older keys
  keep verifying (JWKS lists every key that is not retired).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.db import lock_row, read_only_session, session_scope, utcnow
from store.errors import Conflict, NotFound, ValidationFailed
from store.keys import crypto
from store.keys.models import SigningKey

PURPOSES = {"registry": "ES256", "license": "EdDSA"}


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    alg: str
    private_key: crypto.PrivateKey
    public_key: crypto.PublicKey


def _check_purpose(purpose: str) -> str:
    if purpose not in PURPOSES:
        raise ValidationFailed(f"Key purpose must be one of {', '.join(PURPOSES)}")
    return purpose


def create_key(session: Session, *, purpose: str, secret: str, activate: bool) -> SigningKey:
    _check_purpose(purpose)
    private: crypto.PrivateKey
    public: crypto.PublicKey
    if purpose == "registry":
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key()
        kid = crypto.libtrust_kid(public)
        certificate = crypto.self_signed_certificate(private, "store-token-signer")
    else:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key()
        kid = "lic-" + crypto.jwk_thumbprint(public)[:16]
        certificate = ""
    now = utcnow()
    key = SigningKey(
        kid=kid,
        purpose=purpose,
        alg=PURPOSES[purpose],
        public_pem=crypto.public_pem(public),
        private_pem_encrypted=crypto.encrypt_private_key(private, secret),
        certificate_pem=certificate,
        created_at=now,
        activated_at=now if activate else None,
    )
    session.add(key)
    session.flush()
    return key


def list_keys(session: Session, purpose: str | None = None) -> list[SigningKey]:
    stmt = select(SigningKey).order_by(SigningKey.created_at)
    if purpose:
        stmt = stmt.where(SigningKey.purpose == _check_purpose(purpose))
    return list(session.scalars(stmt))


def trusted_keys(session: Session, purpose: str) -> list[SigningKey]:
    """Keys verifiers must trust: every key of the purpose that is not retired."""
    return [k for k in list_keys(session, purpose) if k.retired_at is None]


def current_key(session: Session, purpose: str) -> SigningKey | None:
    """The key that signs now: the most recently activated one that is not retired."""
    return session.scalar(
        select(SigningKey)
        .where(
            SigningKey.purpose == _check_purpose(purpose),
            SigningKey.activated_at.is_not(None),
            SigningKey.retired_at.is_(None),
        )
        .order_by(SigningKey.activated_at.desc(), SigningKey.created_at.desc())
        .limit(1)
    )


def ensure_key(session: Session, *, purpose: str, secret: str) -> SigningKey:
    """The signing key of the purpose, created on first use."""
    key = current_key(session, purpose)
    if key is None:
        key = create_key(session, purpose=purpose, secret=secret, activate=True)
    return key


def get_key(session: Session, kid: str) -> SigningKey:
    key = session.get(SigningKey, kid)
    if key is None:
        raise NotFound(f"No key with id {kid}")
    return key


def rotate(
    session: Session, *, purpose: str, secret: str, activate: bool | None = None
) -> SigningKey:
    """Add a new key. License keys sign at once; registry keys wait for ``activate`` (after
    the registry restarted with the new bundle) unless ``activate`` is true."""
    if activate is None:
        activate = purpose == "license"
    return create_key(session, purpose=purpose, secret=secret, activate=activate)


def activate(session: Session, *, kid: str) -> SigningKey:
    key = get_key(session, kid)
    if key.retired_at is not None:
        raise Conflict(f"Key {kid} is retired")
    key.activated_at = utcnow()
    session.flush()
    return key


def retire(session: Session, *, kid: str, token_ttl: int) -> SigningKey:
    """Stop trusting a key. The signing key cannot be retired, and a registry key only once
    the last token it signed has expired."""
    # Locked first: a license being signed with it at this instant (store.licensing.service
    # share-locks the key) commits before, and is replaced on its next request.
    lock_row(session, SigningKey, kid)
    key = get_key(session, kid)
    if key.retired_at is not None:
        return key
    current = current_key(session, key.purpose)
    if current is not None and current.kid == kid:
        raise Conflict(f"Key {kid} is the one signing now; rotate and activate another first")
    if key.purpose == "registry" and key.activated_at is not None and current is not None:
        superseded = current.activated_at or utcnow()
        wait_until = superseded + timedelta(seconds=token_ttl + 60)
        if utcnow() < wait_until:
            raise Conflict(
                f"Tokens signed by {kid} may still be in use until {wait_until.isoformat()}"
            )
    key.retired_at = utcnow()
    session.flush()
    return key


def load(key: SigningKey, secret: str) -> LoadedKey:
    private = crypto.decrypt_private_key(key.private_pem_encrypted, secret)
    return LoadedKey(kid=key.kid, alg=key.alg, private_key=private, public_key=private.public_key())


class KeyRing:
    """Signing keys loaded once per process.

    Which key signs is looked up again at most every ``refresh_seconds`` (a cheap indexed
    query), so a rotation made by another process is picked up; the private key is only
    decrypted and parsed when the signing key actually changes.
    """

    def __init__(
        self,
        factory: Callable[[], sessionmaker[Session]],
        secret: str,
        *,
        refresh_seconds: float = 30.0,
    ) -> None:
        self._factory = factory  # returns the sessionmaker in force (tests swap it)
        self._secret = secret
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._loaded: dict[str, tuple[float, LoadedKey]] = {}

    def signer(self, purpose: str) -> LoadedKey:
        cached = self._loaded.get(purpose)
        if cached is not None and time.monotonic() - cached[0] < self._refresh:
            return cached[1]
        with self._lock:
            cached = self._loaded.get(purpose)
            if cached is not None and time.monotonic() - cached[0] < self._refresh:
                return cached[1]
            # Only reads (the signer is often needed inside a request that writes: a
            # second writer there would wait on that request on SQLite); the key is made
            # by ``ensure`` at start-up, or here on first use when there is none.
            with read_only_session(self._factory()) as session:
                key = current_key(session, purpose)
                if key is not None:
                    loaded = self._load(key, cached)
            if key is None:
                loaded = self._load(self._ensure(purpose), cached)
            self._loaded[purpose] = (time.monotonic(), loaded)
            return loaded

    def due(self, purpose: str) -> bool:
        """Whether the signer of ``purpose`` is loaded and due to be looked up again: an
        async caller then runs :meth:`signer` on a thread and awaits it (the look-up's round
        trips would otherwise hold every request on the event loop)."""
        cached = self._loaded.get(purpose)
        return cached is not None and time.monotonic() - cached[0] >= self._refresh

    def ensure(self, purposes: tuple[str, ...] = tuple(PURPOSES)) -> None:
        """Make the signing keys that do not exist yet (at start-up, before any request)."""
        for purpose in purposes:
            self._ensure(purpose)

    def _ensure(self, purpose: str) -> SigningKey:
        with session_scope(self._factory()) as session:
            return ensure_key(session, purpose=purpose, secret=self._secret)

    def _load(self, key: SigningKey, cached: tuple[float, LoadedKey] | None) -> LoadedKey:
        if cached is not None and cached[1].kid == key.kid:
            return cached[1]
        return load(key, self._secret)

    def invalidate(self, purpose: str | None = None) -> None:
        """Look up which key signs again on next use (of ``purpose``, or of every one)."""
        with self._lock:
            if purpose is None:
                self._loaded.clear()
            else:
                self._loaded.pop(purpose, None)
