"""`store sign` and `store signing keygen|fingerprint|keys`: publisher content signing.

``store sign`` is for publishers' CI: it signs an image digest with a local private key
(PEM, ECDSA P-256 or Ed25519) and uploads the signature to the store, which verifies it
against the publisher's registered public keys. It needs no database. Exit codes: 0 the
store accepted the signature (or, without --store-url, it was printed), 1 the store refused
it (the reason is printed), 2 usage errors and unreadable keys.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from pathlib import Path
from typing import Any

import httpx

from store.cli._common import (
    CommandError,
    add_command,
    command,
    emit,
    repository,
    resolve_actor,
    table,
    to_json,
    unit_of_work,
    uuid_arg,
)
from store.errors import StoreError
from store.signing import verify

TOKEN_ENV = "STORE_SIGN_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
KEY_PASSWORD_ENV = "STORE_SIGN_KEY_PASSWORD"  # noqa: S105


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sign = subparsers.add_parser(
        "sign",
        help="sign an image digest with a local key and upload the signature",
        description=(
            "Sign an image digest with a local private key (PEM, ECDSA P-256 or Ed25519; an "
            f"encrypted key's password is read from ${KEY_PASSWORD_ENV}) and upload the "
            "signature to the store, which verifies it against the publisher's registered "
            "public keys. Made for publishers' CI; needs no database. Without --store-url the "
            "signed request body is printed as JSON instead. Exit codes: 0 the store accepted "
            "the signature (or it was printed), 1 the store refused it (the reason is printed) "
            "or could not be reached, 2 usage errors and unreadable keys."
        ),
    )
    sign.add_argument("--key", required=True, type=Path, help="private key file (PEM)")
    sign.add_argument("--repository", required=True, type=repository, help="ORG/NAME")
    sign.add_argument("--digest", required=True, help="the manifest digest, sha256:<64 hex>")
    sign.add_argument("--tag", help="the tag that was pushed (recorded with the signature)")
    sign.add_argument(
        "--registry-host",
        default="",
        help="registry host[:port] to name in the payload's docker-reference "
        "(default: the repository alone)",
    )
    sign.add_argument("--store-url", help="the store to upload to, e.g. https://store.example")
    sign.add_argument(
        "--token",
        help=f"robot or personal token (default: ${TOKEN_ENV}; prefer the variable)",
    )
    sign.add_argument("--json", action="store_true", help="print the result as JSON")
    sign.set_defaults(func=_sign, _parser=sign)

    group = subparsers.add_parser(
        "signing",
        help="publisher signing keys: generate, fingerprint, list, add, revoke",
        description="Publisher signing keys. keygen and fingerprint work offline; keys "
        "commands use the store's database and act as an administrator.",
    )
    sub = group.add_subparsers(dest="signing_command", metavar="ACTION", required=True)
    keygen = add_command(sub, "keygen", _keygen, help="generate a key pair in local files")
    keygen.add_argument(
        "--alg",
        choices=verify.ALGORITHMS,
        default="ecdsa-p256",
        help="key algorithm (default %(default)s)",
    )
    keygen.add_argument(
        "--out", required=True, type=Path, help="private key file; the public key is OUT.pub"
    )
    fp = add_command(sub, "fingerprint", _fingerprint, help="print a public key's fingerprint")
    fp.add_argument("file", type=Path, help="public (or private) key, PEM")

    keys = sub.add_parser(
        "keys",
        help="an organization's registered keys",
        description="List, register and revoke the public keys an organization signs with.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    lst = add_command(keys_sub, "list", _keys_list, help="list an organization's keys")
    lst.add_argument("--org", required=True, help="the organization's slug")
    add = add_command(keys_sub, "add", _keys_add, help="register a public key", actor=True)
    add.add_argument("--org", required=True, help="the organization that signs with it (slug)")
    add.add_argument("--file", required=True, type=Path, help="the public key, PEM")
    add.add_argument(
        "--label", default="", help="a name to tell keys apart, e.g. ci-2027 (up to 100 characters)"
    )
    rev = add_command(keys_sub, "revoke", _keys_revoke, help="revoke a key", actor=True)
    rev.add_argument("--org", required=True, help="the organization the key belongs to (slug)")
    rev.add_argument("key", type=uuid_arg, help="the key's id (see `keys list`)")


def _read_private_key(path: Path) -> verify.PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
    password = os.environ.get(KEY_PASSWORD_ENV)
    try:
        return verify.load_private_key(data, password.encode() if password else None)
    except StoreError as exc:
        raise CommandError(exc.detail) from None


def _sign(args: argparse.Namespace) -> int:
    """Sign and upload; see the module docstring for exit codes."""
    if not verify.DIGEST.match(args.digest):
        args._parser.error("--digest must be sha256:<64 hex digits>")
    try:
        key = _read_private_key(args.key)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reference = f"{args.registry_host}/{args.repository}" if args.registry_host else args.repository
    payload = verify.make_payload(reference, args.digest)
    body: dict[str, Any] = {
        "repository": args.repository,
        "digest": args.digest,
        "tag": args.tag,
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(verify.sign(key, payload)).decode(),
        "key_fingerprint": verify.fingerprint(key.public_key()),
    }
    if not args.store_url:
        print(to_json(body))
        return 0
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"error: give --token or set {TOKEN_ENV}", file=sys.stderr)
        return 2
    url = args.store_url.rstrip("/") + "/api/v1/signatures"
    try:
        response = httpx.post(
            url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
    except httpx.HTTPError as exc:
        print(f"error: the store could not be reached: {exc}", file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": "bad_response", "detail": response.text[:500]}
    if response.status_code != 201:
        print(
            f"error: the store refused the signature ({answer.get('error')}): "
            f"{answer.get('detail')}",
            file=sys.stderr,
        )
        return 1
    emit(
        args,
        answer,
        text=f"signed {args.repository}@{args.digest} with key {body['key_fingerprint'][:16]}…",
    )
    return 0


@command
def _keygen(args: argparse.Namespace) -> int:
    """Generate a private key (PEM, PKCS#8, unencrypted: protect the file) and OUT.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    out: Path = args.out
    if out.exists():
        raise CommandError(f"{out} exists; choose another file")
    key: verify.PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if args.alg == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    out.touch(mode=0o600)
    out.write_bytes(pem)
    pub = out.with_name(out.name + ".pub")
    pub.write_text(verify.public_pem(key))
    data = {
        "private_key": str(out),
        "public_key": str(pub),
        "alg": args.alg,
        "fingerprint": verify.fingerprint(key.public_key()),
    }
    emit(args, data, text=lambda d: f"{d['private_key']}, {d['public_key']}: {d['fingerprint']}")
    return 0


@command
def _fingerprint(args: argparse.Namespace) -> int:
    """SHA-256 of the DER SubjectPublicKeyInfo, as the store shows it."""
    try:
        text = args.file.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    if "PRIVATE KEY" in text:
        loaded = verify.load_public_key(verify.public_pem(_read_private_key(args.file)))
    else:
        loaded = verify.load_public_key(text)
    emit(args, {"alg": loaded.alg, "fingerprint": loaded.fingerprint}, text=loaded.fingerprint)
    return 0


def _key_out(key: Any) -> dict[str, Any]:
    return {
        "id": key.id,
        "alg": key.alg,
        "fingerprint": key.fingerprint,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


_COLUMNS = ("id", "alg", "label", "fingerprint", "revoked_at")


@command
def _keys_list(args: argparse.Namespace) -> int:
    """Every key of the organization, revoked ones included."""
    from store.accounts import service as accounts
    from store.signing import publisher_keys

    with unit_of_work() as session:
        org = accounts.get_organization(session, args.org)
        rows = [_key_out(k) for k in publisher_keys.list_keys(session, org)]
    emit(args, rows, text=lambda r: table(r, _COLUMNS, empty="no keys"))
    return 0


@command
def _keys_add(args: argparse.Namespace) -> int:
    """Register a public key for the organization (as an administrator)."""
    from store.accounts import service as accounts
    from store.signing import publisher_keys

    try:
        pem = args.file.read_text()
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        data = _key_out(
            publisher_keys.add_key(session, org=org, actor=actor, public_pem=pem, label=args.label)
        )
    emit(args, data, text=lambda d: f"registered {d['fingerprint']} ({d['id']})")
    return 0


@command
def _keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key: what it signed counts as unsigned from now on."""
    from store.accounts import service as accounts
    from store.signing import publisher_keys

    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        key = publisher_keys.revoke_key(
            session, key=publisher_keys.get_key(session, org, args.key), actor=actor
        )
        data = _key_out(key)
    emit(args, data, text=lambda d: f"revoked {d['fingerprint']}")
    return 0
