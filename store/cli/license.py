"""`store license verify|show|issue|keys|pem`: license documents, offline and on the store.

``verify`` needs no database: it checks a .lic file (or a bare token) against a JWKS given
with --jwks, or the pinned keys of its issuer in a trust file (``trust``; --trust or
$STORE_LICENSE_TRUST), and optionally a signed revocation list, each read from a file or
fetched over http(s). Exit codes: 0 the license is valid, 1 it is not (the verdict and reason
are printed), 2 no verdict (usage error, no trusted keys, unreadable file or key set,
untrusted revocation list).
The other commands are for operators of the store and use its database.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from store.cli._common import (
    CommandError,
    add_json_option,
    command,
    emit,
    load_settings,
    open_engine,
    prepare_schema,
    table,
    to_json,
    usage_error,
    utc_date,
    uuid_arg,
)
from store.config import Settings
from store.db import make_sessionmaker, session_scope
from store.keys.service import KeyRing
from store.licensing import trust, verify
from store.licensing.trust import TRUST_ENV

FETCH_TIMEOUT = 15
MAX_FETCH_BYTES = 8 * 1024 * 1024


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "license",
        help="verify, show and issue signed license documents",
        description="Verify license files offline; show, issue and publish them (operators).",
    )
    sub = parser.add_subparsers(dest="license_command", metavar="ACTION", required=True)

    p = sub.add_parser(
        "verify",
        help="verify a license file offline (exit 0 only when valid)",
        description=(
            "Verify a .lic file (or a file holding a bare token; '-' for standard input) "
            "against the store's public keys and, with --crl, its revocation list. Prints "
            "licensee, product, tier, dates and the verdict. Exit code 0 when valid, 1 when "
            "not (in grace included), 2 when no verdict could be reached (usage, unreadable "
            "input, untrusted revocation list)."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the .lic file, or '-' for standard input")
    p.add_argument(
        "--jwks",
        metavar="FILE|URL",
        help="the store's public keys (<store>/.well-known/jwks.json); without it, the keys "
        "of the license's issuer in the trust file (--trust), or exit 2 untrusted",
    )
    p.add_argument(
        "--trust",
        metavar="FILE",
        help="trust file of issuers and their pinned keys (see 'store license trust'); "
        f"default: ${TRUST_ENV}",
    )
    p.add_argument(
        "--crl",
        metavar="FILE|URL",
        help="the store's signed revocation list (<store>/licenses/revocations)",
    )
    p.add_argument("--issuer", help="require this issuer (the store's public URL)")
    p.add_argument(
        "--at",
        type=utc_date,
        metavar="TIME",
        help="verify as of this date or ISO 8601 time instead of now",
    )
    add_json_option(p)
    p.set_defaults(func=_verify, _parser=p)

    p = sub.add_parser(
        "show",
        help="list the license documents of an entitlement",
        description="List every license issued for an entitlement, newest first.",
    )
    p.add_argument(
        "entitlement",
        type=uuid_arg,
        metavar="ENTITLEMENT_ID",
        help="the entitlement's id (see `store entitlements list`)",
    )
    add_json_option(p)
    p.set_defaults(func=_show, _parser=p)

    p = sub.add_parser(
        "issue",
        help="issue a new license document for an entitlement",
        description=(
            "Sign a new license for the entitlement's current terms and print it as a .lic "
            "file (or write it with --output). Older documents stay valid until they expire."
        ),
    )
    p.add_argument(
        "entitlement",
        type=uuid_arg,
        metavar="ENTITLEMENT_ID",
        help="the entitlement's id (see `store entitlements list`)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the .lic file here")
    add_json_option(p)
    p.set_defaults(func=_issue, _parser=p)

    p = sub.add_parser(
        "keys",
        help="list the license signing keys (--pem for the public keys)",
        description="List the license keys verifiers trust (every key not retired).",
    )
    p.add_argument("--pem", action="store_true", help="print the public keys as PEM")
    p.add_argument("--jwks", action="store_true", help="print the public keys as a JWKS")
    add_json_option(p)
    p.set_defaults(func=_keys, _parser=p)

    p = sub.add_parser(
        "pem", help="print the license public keys as PEM", description="Same as `keys --pem`."
    )
    p.set_defaults(func=_keys, _parser=p, pem=True, jwks=False, json=False)

    p = sub.add_parser(
        "trust",
        help="add an issuer's public keys to a trust file (for verify)",
        description=(
            "Pin an issuer's public keys in a trust file, which 'verify' then uses for that "
            "issuer's licenses without --jwks. SOURCE is the issuer's JWKS: "
            "<store>/.well-known/jwks.json, or the output of 'store license keys --jwks'. "
            "An entry of the same issuer id is replaced."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="the issuer's JWKS: a file, URL or '-'")
    p.add_argument(
        "--trust",
        metavar="FILE",
        help=f"the trust file to write (created if missing); default: ${TRUST_ENV}",
    )
    p.set_defaults(func=_trust, _parser=p)


# --- verify (offline) ---------------------------------------------------------------------


def _read_source(source: str, what: str) -> str:
    """A file's text, or a URL's body (http and https only)."""
    if source == "-":
        return sys.stdin.read()
    if "://" in source:
        if not source.startswith(("http://", "https://")):
            raise CommandError(f"{what}: only http:// and https:// addresses are fetched")
        request = urllib.request.Request(source, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
                return str(response.read(MAX_FETCH_BYTES).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{what}: could not fetch {source}: {exc}") from None
    try:
        with open(source, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise CommandError(f"{what}: cannot read {source}: {exc.strerror or exc}") from None


def _load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise CommandError(f"{what} is not JSON") from None


def _crl_token(text: str) -> str:
    """The JWS of a revocation list: the store's JSON answer, or the bare JWS."""
    stripped = text.strip()
    if stripped.startswith("{"):
        data = _load_json(stripped, "the revocation list")
        if not isinstance(data, dict) or not isinstance(data.get("jws"), str):
            raise CommandError("the revocation list has no 'jws' field")
        return str(data["jws"])
    return stripped


class Untrusted(CommandError):
    """No key the user trusts can vouch for the license (exit 2, "untrusted: ...")."""


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = json.loads(verify._b64decode(token.split(".")[1]))
    except (ValueError, IndexError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _kid_of(token: str) -> str | None:
    try:
        header = json.loads(verify._b64decode(token.split(".")[0]))
    except (ValueError, IndexError):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _trusted_keys(args: argparse.Namespace, token: str) -> dict[str, Any]:
    """The pinned keys of the license's issuer from the trust file. The license names its
    issuer, but only keys the user chose to trust can vouch for it: never the keys the
    license's own issuer URL would serve."""
    path = args.trust or os.environ.get(TRUST_ENV)
    if not path:
        raise Untrusted(
            f"untrusted: no trusted keys given (--jwks, or --trust FILE / ${TRUST_ENV})"
        )
    try:
        issuers = trust.load(path)
    except trust.TrustFileError as exc:
        raise CommandError(str(exc)) from None
    claims = _unverified_claims(token)
    entry = trust.find(
        issuers, issuer_id=claims.get("isid"), issuer=claims.get("iss"), kid=_kid_of(token)
    )
    if entry is None:
        named = claims.get("isid") or claims.get("iss") or "an unnamed issuer"
        raise Untrusted(f"untrusted: the issuer {named} is not in the trust file {path}")
    return entry


def _verify(args: argparse.Namespace) -> int:
    # 1 means exactly "this license is not valid"; anything that prevents a verdict
    # (unreadable input, untrusted revocation list) is 2, like a usage error.
    try:
        return _verify_license(args)
    except Untrusted as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _verify_license(args: argparse.Namespace) -> int:
    try:
        token = verify.extract_token(_read_source(args.file, "license"))
    except ValueError:
        raise CommandError(f"{args.file} holds no license token") from None
    if args.jwks is not None:
        jwks = _load_json(_read_source(args.jwks, "keys"), "the key set")
        if not isinstance(jwks, dict | list):
            raise CommandError("the key set is not a JWKS")
    else:
        jwks = _trusted_keys(args, token)
    verifier = verify.Verifier(jwks, issuer=args.issuer)
    now = (args.at or datetime.now(UTC)).timestamp()
    crl = None
    if args.crl:
        try:
            crl = verifier.load_revocations(
                _crl_token(_read_source(args.crl, "revocations")), now=now
            )
        except verify.RevocationListError as exc:
            raise CommandError(str(exc)) from None
    result = verifier.verify(token, now=now, revocations=crl)
    report = _report(result, crl)
    emit(args, report, text=_render_report)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if result.valid else 1


def _trust(args: argparse.Namespace) -> int:
    path = args.trust or os.environ.get(TRUST_ENV)
    if not path:
        usage_error(args, f"give --trust FILE or set ${TRUST_ENV}")
        return 2
    try:
        jwks = _load_json(_read_source(args.source, "keys"), "the key set")
        if not isinstance(jwks, dict):
            raise CommandError("the key set is not a JWKS document")
        verify.Verifier(jwks)  # the keys must load
        entry, replaced = trust.add(path, jwks)
    except (CommandError, trust.TrustFileError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = entry.get("issuer") or entry.get("issuer_id")
    print(
        f"{'replaced' if replaced else 'trusted'} {name} "
        f"(issuer id {entry.get('issuer_id') or '-'}): {len(entry['keys'])} key(s) in {path}"
    )
    return 0


def _when(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _report(result: verify.VerificationResult, crl: verify.RevocationList | None) -> dict[str, Any]:
    claims = result.claims or {}
    report: dict[str, Any] = {
        "verdict": result.verdict,
        "valid": result.valid,
        "reason": result.reason,
        "kid": result.kid,
        "warnings": list(result.warnings),
        "revocation_checked": crl is not None,
        "revocation_list_issued_at": _when(crl.issued_at) if crl else None,
    }
    if claims:
        report.update(
            license_id=claims.get("lid"),
            issuer=claims.get("iss"),
            issuer_id=claims.get("isid"),
            licensee=claims.get("sub"),
            product=claims.get("product"),
            tier=claims.get("tier"),
            features=claims.get("features", []),
            seats=claims.get("seats"),
            issued_at=_when(claims.get("iat")),
            not_before=_when(claims.get("nbf")),
            expires_at=_when(claims.get("exp")),
            grace_until=_when(claims.get("grace_until")),
            claims=claims,
        )
    return report


def _render_report(report: dict[str, Any]) -> str:
    lines = []
    if "license_id" in report:
        sub = report["licensee"] or {}
        product = report["product"] or {}
        tier = report["tier"] or {}
        seats = report["seats"]
        rows = [
            ("License", report["license_id"]),
            ("Licensee", f"{sub.get('name')} ({sub.get('type')} {sub.get('id')})"),
            (
                "Product",
                f"{product.get('title')} ({product.get('repository')}, {product.get('kind')})",
            ),
            ("Tier", f"{tier.get('name')} ({tier.get('slug')})"),
            ("Features", ", ".join(report["features"]) or "-"),
            ("Seats", "unlimited" if seats is None else str(seats)),
            ("Issued", report["issued_at"]),
            ("Valid from", report["not_before"]),
            ("Expires", report["expires_at"] or "never (perpetual)"),
        ]
        if report["grace_until"]:
            rows.append(("Grace until", report["grace_until"]))
        rows += [("Issuer", report["issuer"]), ("Key", report["kid"])]
        rows.append(
            (
                "Revocation",
                f"checked (list of {report['revocation_list_issued_at']})"
                if report["revocation_checked"]
                else "not checked (no --crl)",
            )
        )
        lines += [f"{label + ':':<13}{value}" for label, value in rows]
    verdict = "VALID" if report["valid"] else report["verdict"].upper().replace("_", " ")
    lines.append(f"{'Verdict:':<13}{verdict} ({report['reason']})")
    return "\n".join(lines)


# --- operator commands (the store's database) ------------------------------------------------


@contextmanager
def _store() -> Iterator[tuple[Session, KeyRing, Settings]]:
    settings = load_settings()
    with open_engine(settings) as engine:
        prepare_schema(engine, settings)
        factory = make_sessionmaker(engine)
        keyring = KeyRing(lambda: factory, settings.resolved_secret_key)
        with session_scope(factory) as session:
            yield session, keyring, settings


def _license_row(document: Any) -> dict[str, Any]:
    return {
        "id": document.id,
        "entitlement_id": document.entitlement_id,
        "kid": document.kid,
        "issued_at": document.issued_at,
        "not_before": document.not_before,
        "expires_at": document.expires_at,
        "revoked_at": document.revoked_at,
        "revocation_reason": document.revocation_reason,
        "token": document.token,
    }


@command
def _show(args: argparse.Namespace) -> int:
    from store.licensing import entitlements, service

    with _store() as (session, _keyring, _settings):
        entitlement = entitlements.get_entitlement(session, args.entitlement)
        rows = [_license_row(d) for d in service.licenses_of(session, entitlement)]
        emit(
            args,
            rows,
            text=lambda data: table(
                data,
                ["id", "kid", "issued_at", "expires_at", "revoked_at"],
                empty="No license issued yet; `store license issue` issues one.",
            ),
        )
    return 0


@command
def _issue(args: argparse.Namespace) -> int:
    from store.licensing import entitlements, service

    with _store() as (session, keyring, settings):
        entitlement = entitlements.get_entitlement(session, args.entitlement)
        document = service.issue_license(session, keyring, settings, entitlement)
        filename, text = service.license_file(document)
        data = {**_license_row(document), "filename": filename}
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise CommandError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        emit(args, data, text=f"License {document.id} written to {args.output}")
    else:
        emit(args, data, text=text.rstrip("\n"))
    return 0


@command
def _keys(args: argparse.Namespace) -> int:
    from store.licensing import service

    if args.pem and args.jwks:
        usage_error(args, "give --pem or --jwks, not both")
    with _store() as (session, keyring, settings):
        if args.jwks:
            print(to_json(service.jwks(session, keyring, settings)))
            return 0
        rows = service.public_keys(session, keyring, settings)
    if args.pem:
        for row in rows:
            print(f"# {row['kid']}{' (signing)' if row['signing'] else ''}")
            print(row["public_pem"].rstrip("\n"))
        return 0
    emit(
        args,
        rows,
        text=lambda data: table(
            data, ["kid", "alg", "signing", "created_at"], empty="No license keys."
        ),
    )
    return 0
