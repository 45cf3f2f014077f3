"""Passwords (argon2id), prefixed checksummed tokens, and constant-time comparison."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current defaults
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 30
_CHECK_LEN = 6

TOKEN_PREFIXES = {"personal": "stp_", "robot": "str_", "refresh": "stf_"}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


_dummy_hash: str | None = None


def use_cheap_hashing_for_tests() -> None:
    """Still argon2id, with tiny costs: for test suites only, never for a running store."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    _dummy_hash = None


def burn_password_check(password: str) -> None:
    """Spend what a real check costs when the account does not exist, so the time taken
    does not reveal which usernames exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def generate_token(kind: str) -> str:
    """A new secret such as ``stp_<30 random base62><6 base62 CRC32>``.

    The prefix and checksum let secret scanners recognise a leaked token without a lookup.
    """
    prefix = TOKEN_PREFIXES[kind]
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    check = _base62(zlib.crc32(f"{prefix}{body}".encode()), _CHECK_LEN)
    return f"{prefix}{body}{check}"


def token_kind(token: str) -> str | None:
    """The kind of a well-formed token whose checksum matches, else None."""
    for kind, prefix in TOKEN_PREFIXES.items():
        if token.startswith(prefix):
            rest = token[len(prefix) :]
            if len(rest) != _BODY_LEN + _CHECK_LEN:
                return None
            body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
            expected = _base62(zlib.crc32(f"{prefix}{body}".encode()), _CHECK_LEN)
            return kind if hmac.compare_digest(check, expected) else None
    return None


def hash_token(token: str) -> str:
    # Tokens carry 178 bits of randomness, so a fast hash is enough (no salt needed).
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
