"""The trust file of `store license verify`: issuers and their pinned public keys.

A verifier must not take a license's word for who signed it: the keys that vouch for a
license are the ones the user chose to trust. The trust file (``--trust FILE`` or
``$STORE_LICENSE_TRUST``) holds one entry per issuer, each exactly the issuer's JWKS
document (``<store>/.well-known/jwks.json`` names ``issuer`` and ``issuer_id`` beside its
``keys``)::

    {"issuers": [{"issuer": "https://store.example", "issuer_id": "0f1e…",
                  "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "…", "kid": "…"}]}]}

A license is matched to an entry by its stable issuer id (claim ``isid``, unchanged when the
store's public URL changes), or by its issuer URL (claim ``iss``) when it carries no id.
Standard library only, like :mod:`store.licensing.verify`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TRUST_ENV = "STORE_LICENSE_TRUST"


class TrustFileError(ValueError):
    """The trust file cannot be read or is not in the format above."""


def _entry(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise TrustFileError(f"{where}: an issuer needs a 'keys' list (a JWKS)")
    for name in ("issuer", "issuer_id"):
        if name in value and not isinstance(value[name], str):
            raise TrustFileError(f"{where}: '{name}' must be a string")
    if not value.get("issuer") and not value.get("issuer_id"):
        raise TrustFileError(f"{where}: an issuer needs 'issuer_id' or 'issuer'")
    return value


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every issuer of the trust file; raises TrustFileError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrustFileError(f"cannot read the trust file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise TrustFileError(f"the trust file {path} is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("issuers"), list):
        raise TrustFileError(f"the trust file {path} has no 'issuers' list")
    return [_entry(e, f"{path}: issuer {i + 1}") for i, e in enumerate(data["issuers"])]


def find(
    issuers: list[dict[str, Any]], *, issuer_id: Any = None, issuer: Any = None, kid: Any = None
) -> dict[str, Any] | None:
    """The entry for a license naming ``issuer_id`` (claim isid) and ``issuer`` (iss), or,
    for a license without an issuer id whose issuer URL changed since, the entry holding
    the key it names (``kid``; the signature is checked against that entry's keys)."""
    if isinstance(issuer_id, str) and issuer_id:
        for entry in issuers:
            if entry.get("issuer_id") == issuer_id:
                return entry
        # An entry written by hand without an id may still name the issuer's URL.
        candidates = [e for e in issuers if not e.get("issuer_id")]
    else:
        candidates = issuers
    if isinstance(issuer, str) and issuer:
        for entry in candidates:
            if entry.get("issuer", "").rstrip("/") == issuer.rstrip("/"):
                return entry
    if not issuer_id and isinstance(kid, str) and kid:
        for entry in issuers:
            if any(isinstance(k, dict) and k.get("kid") == kid for k in entry["keys"]):
                return entry
    return None


def add(path: str | os.PathLike[str], jwks: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Add (or replace, by issuer id, else URL) an issuer's JWKS in the trust file, created
    if missing; written atomically. Returns the entry and whether it replaced one."""
    entry = _entry(jwks, "the key set")
    target = Path(path)
    issuers = load(target) if target.exists() else []
    kept = [
        e
        for e in issuers
        if not (
            (entry.get("issuer_id") and e.get("issuer_id") == entry["issuer_id"])
            or (not entry.get("issuer_id") and e.get("issuer") == entry.get("issuer"))
        )
    ]
    replaced = len(kept) != len(issuers)
    text = json.dumps({"issuers": [*kept, entry]}, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry, replaced
