"""`store license ...`: offline verification of .lic files and the operator commands."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from store.cli.main import main
from store.config import Settings
from store.db import make_engine, make_sessionmaker, utcnow
from store.keys.service import KeyRing
from store.licensing import entitlements, service
from tests.licensing.conftest import Shop


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def _run(*argv: str) -> Result:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return _run


@dataclass
class Files:
    lic: Path
    jwks: Path
    crl: Path
    lid: str


def write_files(
    tmp_path: Path, session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> Files:
    document = service.current_license(session, keyring, settings, shop.entitlement)
    name, text = service.license_file(document)
    lic = tmp_path / name
    lic.write_text(text)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(service.jwks(session, keyring, settings)))
    signed = service.revocation_list(session, keyring, settings)
    crl = tmp_path / "revocations.json"
    crl.write_text(json.dumps({**signed.claims, "jws": signed.jws}))
    return Files(lic, jwks, crl, str(document.id))


@pytest.fixture
def files(
    tmp_path: Path, session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> Files:
    return write_files(tmp_path, session, keyring, settings, shop)


def test_verify_valid_license(run: Run, files: Files) -> None:
    result = run("license", "verify", str(files.lic), "--jwks", str(files.jwks))
    assert result.code == 0, result.err
    assert f"License:     {files.lid}" in result.out
    assert "Licensee:    Cus Tomer (account" in result.out
    assert "Product:     Redis HA (acme/redis-ha, image)" in result.out
    assert "Tier:        Pro (pro)" in result.out and "Seats:       5" in result.out
    assert "Features:    sso, backup" in result.out
    assert "Revocation:  not checked" in result.out
    assert "Verdict:     VALID" in result.out


def test_verify_with_revocation_list_and_json(run: Run, files: Files) -> None:
    args = ("license", "verify", str(files.lic), "--jwks", str(files.jwks))
    result = run(*args, "--crl", str(files.crl), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["verdict"] == "valid" and report["valid"] is True
    assert report["revocation_checked"] is True and report["license_id"] == files.lid
    assert report["tier"] == {"slug": "pro", "name": "Pro"} and report["expires_at"].endswith("Z")
    # A bare JWS is accepted as the revocation list too, and the token alone as the license.
    bare = files.crl.with_suffix(".jws")
    bare.write_text(json.loads(files.crl.read_text())["jws"])
    token = files.lic.with_suffix(".token")
    token.write_text(files.lic.read_text().strip().splitlines()[-1])
    assert (
        run("license", "verify", str(token), "--jwks", str(files.jwks), "--crl", str(bare)).code
        == 0
    )


def test_verify_revoked_license(
    run: Run, tmp_path: Path, session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    files = write_files(tmp_path, session, keyring, settings, shop)
    entitlements.revoke(session, entitlement=shop.entitlement, actor=None, reason="refund")
    signed = service.revocation_list(session, keyring, settings)
    files.crl.write_text(json.dumps({**signed.claims, "jws": signed.jws}))
    result = run(
        "license", "verify", str(files.lic), "--jwks", str(files.jwks), "--crl", str(files.crl)
    )
    assert result.code == 1
    assert "Verdict:     REVOKED (license" in result.out
    # Without the list the signature alone still verifies: offline verifiers need the list.
    assert run("license", "verify", str(files.lic), "--jwks", str(files.jwks)).code == 0


def test_verify_tampered_license(run: Run, files: Files) -> None:
    text = files.lic.read_text()
    token = text.strip().splitlines()[-1]
    head, body, sig = token.split(".")
    files.lic.write_text(text.replace(token, f"{head}.{body[:-4]}AAAA.{sig}"))
    result = run("license", "verify", str(files.lic), "--jwks", str(files.jwks))
    assert result.code == 1 and "Verdict:     BAD SIGNATURE" in result.out
    assert "License:" not in result.out  # nothing unverified is shown as fact


def test_verify_dates(run: Run, files: Files, session: Session, shop: Shop) -> None:
    ends = shop.entitlement.ends_at
    assert ends is not None
    base = ("license", "verify", str(files.lic), "--jwks", str(files.jwks))
    later = run(*base, "--at", (ends + timedelta(days=2)).isoformat())
    assert later.code == 1 and "Verdict:     EXPIRED (expired at" in later.out
    earlier = run(*base, "--at", (utcnow() - timedelta(days=5)).date().isoformat())
    assert earlier.code == 1 and "NOT YET VALID" in earlier.out


def test_verify_in_grace_is_not_valid(
    run: Run, tmp_path: Path, session: Session, keyring: KeyRing, settings: Settings, shop: Shop
) -> None:
    ends = utcnow() - timedelta(hours=2)
    entitlements.extend(
        session,
        entitlement=shop.entitlement,
        ends_at=ends,
        grace_until=utcnow() + timedelta(days=2),
        signer=None,
    )
    files = write_files(tmp_path, session, keyring, settings, shop)
    result = run("license", "verify", str(files.lic), "--jwks", str(files.jwks), "--json")
    assert result.code == 1
    assert json.loads(result.out)["verdict"] == "in_grace"


def test_verify_unknown_key(run: Run, files: Files, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"keys": []}))
    result = run("license", "verify", str(files.lic), "--jwks", str(other))
    assert result.code == 1 and "UNKNOWN KEY" in result.out


def test_verify_input_errors_exit_2(run: Run, files: Files, tmp_path: Path) -> None:
    assert run("license", "verify").code == 2
    assert run("license").code == 2
    missing = run("license", "verify", str(tmp_path / "nope.lic"), "--jwks", str(files.jwks))
    assert missing.code == 2 and "cannot read" in missing.err
    empty = tmp_path / "empty.lic"
    empty.write_text("# nothing\n")
    assert run("license", "verify", str(empty), "--jwks", str(files.jwks)).code == 2
    not_json = tmp_path / "bad.json"
    not_json.write_text("<html>")
    assert run("license", "verify", str(files.lic), "--jwks", str(not_json)).code == 2
    scheme = run("license", "verify", str(files.lic), "--jwks", "file:///etc/passwd")
    assert scheme.code == 2 and "only http" in scheme.err
    # A revocation list that does not verify gives no verdict.
    forged = json.loads(files.crl.read_text())
    head, body, sig = forged["jws"].split(".")
    forged["jws"] = f"{head}.{body}.{sig[::-1]}"
    files.crl.write_text(json.dumps(forged))
    crl = run(
        "license", "verify", str(files.lic), "--jwks", str(files.jwks), "--crl", str(files.crl)
    )
    assert crl.code == 2 and "revocation list rejected" in crl.err


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[str]:
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_verify_fetches_keys_and_list_over_http(run: Run, files: Files, http_dir: str) -> None:
    result = run(
        "license",
        "verify",
        str(files.lic),
        "--jwks",
        f"{http_dir}/jwks.json",
        "--crl",
        f"{http_dir}/revocations.json",
    )
    assert result.code == 0, result.err
    unreachable = run("license", "verify", str(files.lic), "--jwks", f"{http_dir}/missing.json")
    assert unreachable.code == 2 and "could not fetch" in unreachable.err


# --- operator commands, against a store database of their own --------------------------------


@pytest.fixture
def store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("STORE_") and name != "STORE_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    data = tmp_path / "store-data"
    monkeypatch.setenv("STORE_DATA_DIR", str(data))
    monkeypatch.setenv("STORE_DATABASE_URL", f"sqlite:///{data / 'store.db'}")
    monkeypatch.setenv("STORE_SECRET_KEY", "cli-secret-0123456789")
    monkeypatch.setenv("STORE_PUBLIC_URL", "https://store.example")
    monkeypatch.chdir(tmp_path)
    return data


def test_operator_issue_show_keys(run: Run, store_env: Path, tmp_path: Path) -> None:
    from store import migrate
    from tests.licensing.conftest import make_shop

    assert run("license", "keys", "--json").code == 0  # creates the database and first key
    engine = make_engine(f"sqlite:///{store_env / 'store.db'}")
    migrate.upgrade(engine)
    with make_sessionmaker(engine)() as s:
        entitlement_id = str(make_shop(s).entitlement.id)
        s.commit()
    engine.dispose()

    shown = run("license", "show", entitlement_id)
    assert shown.code == 0 and "No license issued yet" in shown.out
    lic = tmp_path / "out.lic"
    issued = run("license", "issue", entitlement_id, "--output", str(lic))
    assert issued.code == 0, issued.err
    printed = run("license", "issue", entitlement_id, "--json")
    assert printed.code == 0 and json.loads(printed.out)["filename"].endswith(".lic")
    listed = run("license", "show", entitlement_id, "--json")
    assert [row["revoked_at"] for row in json.loads(listed.out)] == [None, None]

    jwks = tmp_path / "jwks.json"
    keys = run("license", "keys", "--jwks")
    assert keys.code == 0
    jwks.write_text(keys.out)
    verified = run(
        "license", "verify", str(lic), "--jwks", str(jwks), "--issuer", "https://store.example"
    )
    assert verified.code == 0, verified.out + verified.err

    pem = run("license", "pem")
    assert pem.code == 0 and "(signing)" in pem.out and "BEGIN PUBLIC KEY" in pem.out
    assert run("license", "keys", "--pem").out == pem.out
    assert run("license", "keys", "--pem", "--jwks").code == 2
    table = run("license", "keys")
    assert "KID" in table.out and "lic-" in table.out
    missing = run("license", "show", "4b0d6c1e-0000-4000-8000-000000000001")
    assert missing.code == 1 and "No such entitlement" in missing.err
    assert run("license", "show", "not-a-uuid").code == 2
