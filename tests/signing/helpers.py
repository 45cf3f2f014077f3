"""Signing test helpers: local keys, signed upload bodies, pushes as the registry reports them."""

from __future__ import annotations

import base64
import hashlib
import itertools
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy.orm import Session

from store.registry import events
from store.signing import verify

_seq = itertools.count(1)
REGISTRY_HOST = "127.0.0.1:5000"  # the default STORE_REGISTRY_URL's host


def new_key(alg: str = "ecdsa-p256") -> verify.PrivateKey:
    if alg == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def signed_body(
    key: verify.PrivateKey,
    repository: str,
    digest: str,
    *,
    reference: str | None = None,
    payload_digest: str | None = None,
    tag: str | None = None,
    tamper: bool = False,
) -> dict[str, Any]:
    """What `store sign` uploads: the payload and the signature over it, base64."""
    payload = verify.make_payload(
        reference if reference is not None else f"{REGISTRY_HOST}/{repository}",
        payload_digest or digest,
    )
    signature = verify.sign(key, payload)
    if tamper:
        payload = payload.replace(b'"optional":null', b'"optional":{"x":"y"}')
    return {
        "repository": repository,
        "digest": digest,
        "tag": tag,
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(signature).decode(),
    }


def push(session: Session, repository: str, tag: str, digest: str, actor: str = "robot:ci") -> None:
    """A push notification for ``repository:tag`` → ``digest``, processed like the registry's."""
    envelope = {
        "events": [
            {
                "id": f"push-{next(_seq)}-{digest[-8:]}",
                "timestamp": "2026-11-28T12:00:00.000000000Z",
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": 500,
                    "repository": repository,
                    "tag": tag,
                },
                "request": {"method": "PUT"},
                "actor": {"name": actor},
            }
        ]
    }
    outcome = events.process(session, envelope)
    assert outcome.processed == 1, outcome
