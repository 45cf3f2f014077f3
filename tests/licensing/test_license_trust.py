"""Trust anchors of `store license verify`: without --jwks only the pinned keys of a trust
file vouch for a license; the stable issuer id survives a change of public URL, and
revocation lists match on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy.orm import Session

from store.config import Settings
from store.db import utcnow
from store.keys import crypto
from store.keys.service import KeyRing
from store.licensing import service, trust, verify
from tests.licensing import test_license_cli as cli_tests
from tests.licensing.conftest import Shop
from tests.licensing.test_license_cli import Files, Run, write_files

run = cli_tests.run  # the same fixtures as the other `store license` tests
files = cli_tests.files

UNTRUSTED = "untrusted: no trusted keys given"


@pytest.fixture(autouse=True)
def _no_trust_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(trust.TRUST_ENV, raising=False)


def forged_license(files: Files, tmp_path: Path) -> Path:
    """The license re-signed by an attacker's own key (its kid and its issuer kept)."""
    token = verify.extract_token(files.lic.read_text())
    header, payload, _ = token.split(".")
    claims = json.loads(verify._b64decode(payload))
    key = ed25519.Ed25519PrivateKey.generate()

    class Forger:
        kid = json.loads(verify._b64decode(header))["kid"]
        private_key = key

    forged = tmp_path / "forged.lic"
    forged.write_text(service.sign(Forger, claims))  # type: ignore[arg-type]
    return forged


def test_without_keys_a_license_is_untrusted(run: Run, files: Files, tmp_path: Path) -> None:
    result = run("license", "verify", str(files.lic))
    assert result.code == 2
    assert UNTRUSTED in result.err
    forged = run("license", "verify", str(forged_license(files, tmp_path)))
    assert forged.code == 2 and UNTRUSTED in forged.err


def test_trust_file_pins_the_issuers_keys(
    run: Run, files: Files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust_file = tmp_path / "trust.json"
    added = run("license", "trust", str(files.jwks), "--trust", str(trust_file))
    assert added.code == 0, added.err
    assert "trusted http://store.test" in added.out
    entry = json.loads(trust_file.read_text())["issuers"][0]
    assert entry["issuer_id"] and entry["keys"]
    ok = run("license", "verify", str(files.lic), "--trust", str(trust_file), "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["issuer_id"] == entry["issuer_id"]
    # The same through the environment.
    monkeypatch.setenv(trust.TRUST_ENV, str(trust_file))
    assert run("license", "verify", str(files.lic)).code == 0
    # A forgery naming the trusted issuer is checked against the pinned keys: not valid.
    forged = run("license", "verify", str(forged_license(files, tmp_path)))
    assert forged.code == 1 and "BAD SIGNATURE" in forged.out
    # Adding the same issuer again replaces its entry.
    again = run("license", "trust", str(files.jwks), "--trust", str(trust_file))
    assert again.code == 0 and again.out.startswith("replaced")
    assert len(json.loads(trust_file.read_text())["issuers"]) == 1


def test_an_issuer_missing_from_the_trust_file_is_untrusted(
    run: Run, files: Files, tmp_path: Path
) -> None:
    trust_file = tmp_path / "trust.json"
    other = crypto.public_jwk(ed25519.Ed25519PrivateKey.generate().public_key())
    trust_file.write_text(
        json.dumps(
            {"issuers": [{"issuer": "https://other.example", "issuer_id": "x", "keys": [other]}]}
        )
    )
    result = run("license", "verify", str(files.lic), "--trust", str(trust_file))
    assert result.code == 2
    assert result.err.startswith("untrusted: the issuer") and str(trust_file) in result.err
    trust_file.write_text("{not json")
    assert run("license", "verify", str(files.lic), "--trust", str(trust_file)).code == 2
    assert run("license", "trust", str(files.jwks)).code == 2  # no trust file named


@pytest.mark.parametrize("with_isid", [True, False], ids=["new-license", "older-license"])
def test_revocation_list_from_a_new_public_url_applies_to_older_licenses(
    run: Run,
    tmp_path: Path,
    session: Session,
    keyring: KeyRing,
    settings: Settings,
    shop: Shop,
    with_isid: bool,
) -> None:
    files = write_files(tmp_path, session, keyring, settings, shop)
    if not with_isid:  # a license issued before licenses carried the issuer id
        claims = service.decode_payload(verify.extract_token(files.lic.read_text()))
        del claims["isid"]
        files.lic.write_text(service.sign(keyring.signer("license"), claims))
    service.revoke_licenses(session, shop.entitlement, reason="refund")
    session.flush()
    # The store moves to a new public URL: same secret, same keys, same issuer id.
    moved = settings.model_copy(update={"public_url": "https://new.example"})
    assert moved.resolved_license_issuer_id == settings.resolved_license_issuer_id
    signed = service.revocation_list(session, keyring, moved, now=utcnow())
    assert signed.claims["iss"] == "https://new.example"
    assert files.lid in signed.claims["revoked"]
    crl = tmp_path / "new-revocations.json"
    crl.write_text(json.dumps({**signed.claims, "jws": signed.jws}))
    jwks = tmp_path / "new-jwks.json"
    jwks.write_text(json.dumps(service.jwks(session, keyring, moved)))
    args = ("license", "verify", str(files.lic), "--jwks", str(jwks), "--crl", str(crl))
    result = run(*args, "--json")
    report = json.loads(result.out)
    assert report["issuer"] == "http://store.test"  # the license names the old URL
    assert report["verdict"] == "revoked", report
    assert result.code == 1
    # The same through a trust file made from the new URL's keys.
    trust_file = tmp_path / "trust.json"
    assert run("license", "trust", str(jwks), "--trust", str(trust_file)).code == 0
    trusted = run(
        "license", "verify", str(files.lic), "--trust", str(trust_file), "--crl", str(crl)
    )
    assert trusted.code == 1 and "REVOKED" in trusted.out, trusted.err


def test_a_revocation_list_of_another_issuer_does_not_apply(
    run: Run, files: Files, tmp_path: Path, keyring: KeyRing
) -> None:
    crl_claims = json.loads(files.crl.read_text())
    crl_claims.pop("jws")
    crl_claims["isid"] = "another-issuer"
    crl_claims["revoked"] = [files.lid]
    jws = service.sign(keyring.signer("license"), crl_claims, verify.REVOCATIONS_TYP)
    crl = tmp_path / "other.json"
    crl.write_text(jws)
    result = run("license", "verify", str(files.lic), "--jwks", str(files.jwks), "--crl", str(crl))
    assert result.code == 0
    assert "the revocation list is from" in result.err
