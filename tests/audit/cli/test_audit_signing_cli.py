"""`store audit verify|list` and `store sign` / `store signing ...`."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from store.audit import service as audit
from store.audit.models import AuditEvent
from store.signing import verify
from tests.cli._support import Run
from tests.factories import make_account, make_admin, make_org


def test_audit_verify_and_list(run: Run, db: Session) -> None:
    result = run("audit", "verify")
    assert result.code == 0, result.err
    admin = make_admin(db)
    alice = make_account(db, "alice")
    make_org(db, alice, "acme")
    audit.record(db, action="test.one", actor=admin)
    second = audit.record(db, action="test.two", actor=alice, details={"x": 1})
    audit.record(db, action="test.three")
    db.commit()
    result = run("audit", "verify", "--json")
    assert result.code == 0 and result.json()["ok"] is True
    listed = run("audit", "list", "--action", "test.", "--json").json()
    assert [e["action"] for e in listed] == ["test.three", "test.two", "test.one"]
    assert "test.two" in run("audit", "list", "--actor", "alice").out
    db.execute(update(AuditEvent).where(AuditEvent.id == second.id).values(actor="mallory"))
    db.commit()
    result = run("audit", "verify")
    assert result.code == 1
    assert f"BROKEN at seq {second.seq}" in result.out


def test_keygen_fingerprint_and_offline_sign(run: Run, tmp_path: Path) -> None:
    key_file = tmp_path / "k.pem"
    made = run("signing", "keygen", "--alg", "ed25519", "--out", str(key_file), "--json")
    assert made.code == 0, made.err
    assert key_file.stat().st_mode & 0o077 == 0
    fingerprint = made.json()["fingerprint"]
    assert run("signing", "fingerprint", f"{key_file}.pub").out.strip() == fingerprint
    assert run("signing", "fingerprint", str(key_file)).out.strip() == fingerprint
    assert run("signing", "keygen", "--out", str(key_file)).code == 1  # exists
    digest = "sha256:" + "ab" * 32
    signed = run("sign", "--key", str(key_file), "--repository", "acme/app", "--digest", digest)
    assert signed.code == 0, signed.err
    body = json.loads(signed.out)
    assert body["key_fingerprint"] == fingerprint
    import base64

    public = verify.load_public_key(Path(f"{key_file}.pub").read_text()).key
    claims = verify.verify(
        public,
        payload=base64.b64decode(body["payload"]),
        signature=base64.b64decode(body["signature"]),
        repository="acme/app",
        digest=digest,
        registry_host="",
    )
    assert claims.docker_reference == "acme/app"
    bad = run("sign", "--key", str(key_file), "--repository", "acme/app", "--digest", "sha256:x")
    assert bad.code == 2
    missing = run(
        "sign", "--key", str(tmp_path / "nope"), "--repository", "a/b", "--digest", digest
    )
    assert missing.code == 2 and "cannot read" in missing.err


def test_keys_add_list_revoke(run: Run, db: Session, tmp_path: Path) -> None:
    admin = make_admin(db, "keyadmin")
    make_org(db, make_account(db, "bob"), "bobco")
    db.commit()
    key_file = tmp_path / "k.pem"
    assert run("signing", "keygen", "--out", str(key_file)).code == 0
    added = run(
        "signing", "keys", "add", "--org", "bobco", "--file", f"{key_file}.pub",
        "--label", "ci", "--as", admin.username, "--json",
    )  # fmt: skip
    assert added.code == 0, added.err
    key_id = added.json()["id"]
    listed = run("signing", "keys", "list", "--org", "bobco", "--json").json()
    assert [k["label"] for k in listed] == ["ci"]
    revoked = run("signing", "keys", "revoke", "--org", "bobco", key_id, "--json")
    assert revoked.code == 0 and revoked.json()["revoked_at"]
    assert run("signing", "keys", "list", "--org", "nosuch").code == 1
