"""Signing through the JSON API and the pages; every signing and audit template renders."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store import TEMPLATES_DIR
from store.accounts import service as accounts
from store.signing import publisher_keys, verify
from tests.factories import api_token, auth, make_account, make_admin, make_org, make_product
from tests.signing.helpers import digest_of, new_key, push, signed_body
from tests.web.helpers import HTML, login, submit

V1, V2 = digest_of("v1"), digest_of("v2")


def _world(session: Session) -> dict[str, object]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    make_product(session, acme, alice, "app")
    key = new_key("ed25519")
    publisher_keys.add_key(
        session, org=acme, actor=alice, public_pem=verify.public_pem(key), label="ci"
    )
    robot = accounts.create_token(
        session, kind="robot", name="ci", scopes=["pull", "push"], created_by=alice, org=acme
    ).secret
    push(session, "acme/app", "v1", V1)
    return {"alice": alice, "acme": acme, "key": key, "robot": robot}


def test_api_upload_and_tag_status(client: TestClient, session: Session) -> None:
    world = _world(session)
    body = signed_body(world["key"], "acme/app", V1, tag="v1")
    assert client.post("/api/v1/signatures", json=body).status_code == 401
    pull_only = accounts.create_token(
        session,
        kind="robot",
        name="ro",
        scopes=["pull"],
        created_by=world["alice"],
        org=world["acme"],
    ).secret
    assert client.post("/api/v1/signatures", json=body, headers=auth(pull_only)).status_code == 403
    bad = signed_body(world["key"], "acme/app", V1, payload_digest=V2)
    response = client.post("/api/v1/signatures", json=bad, headers=auth(world["robot"]))
    assert response.status_code == 422 and response.json()["error"] == "wrong_digest"
    response = client.post("/api/v1/signatures", json=body, headers=auth(world["robot"]))
    assert response.status_code == 201, response.text
    assert response.json()["uploaded_by"] == "robot:acme:ci"
    tags = client.get("/api/v1/products/acme/app/tags").json()
    assert [(t["tag"], t["status"], t["signers"]) for t in tags] == [("v1", "signed", ["ci"])]
    # A personal token of a member works too; an outsider's does not.
    token = api_token(session, world["alice"])
    other = signed_body(world["key"], "acme/app", V2)
    assert client.post("/api/v1/signatures", json=other, headers=auth(token)).status_code == 201
    mallory = api_token(session, make_account(session, "mallory"))
    assert client.post("/api/v1/signatures", json=other, headers=auth(mallory)).status_code == 403
    listed = client.get("/api/v1/products/acme/app/signatures", params={"digest": V1})
    assert listed.status_code == 200 and [s["digest"] for s in listed.json()] == [V1]
    for bad_digest in ("\x00", "sha256:xyz", V1.upper()):
        response = client.get("/api/v1/products/acme/app/signatures", params={"digest": bad_digest})
        assert response.status_code == 422 and response.json()["error"] == "bad_digest"


def test_api_keys_and_certification(client: TestClient, session: Session) -> None:
    world = _world(session)
    owner = auth(api_token(session, world["alice"]))
    key = new_key()
    response = client.post(
        "/api/v1/orgs/acme/signing-keys",
        json={"public_pem": verify.public_pem(key), "label": "laptop"},
        headers=owner,
    )
    assert response.status_code == 201
    key_id = response.json()["id"]
    assert response.json()["fingerprint"] == verify.fingerprint(key.public_key())
    listed = client.get("/api/v1/orgs/acme/signing-keys", headers=owner).json()
    assert {k["label"] for k in listed} == {"ci", "laptop"}
    revoked = client.post(f"/api/v1/orgs/acme/signing-keys/{key_id}/revoke", headers=owner)
    assert revoked.json()["revoked_at"] is not None
    body = signed_body(world["key"], "acme/app", V1)
    assert client.post("/api/v1/signatures", json=body, headers=owner).status_code == 201
    submitted = client.post(
        "/api/v1/products/acme/app/certification", json={"tag": "v1"}, headers=owner
    )
    assert submitted.status_code == 201 and submitted.json()["digest"] == V1
    admin = auth(api_token(session, make_admin(session)))
    queue = client.get("/api/v1/admin/certification", headers=admin).json()
    assert [r["id"] for r in queue] == [submitted.json()["id"]]
    decided = client.post(
        f"/api/v1/admin/certification/{queue[0]['id']}/approve", json={"note": ""}, headers=admin
    )
    assert decided.status_code == 200 and decided.json()["status"] == "approved"
    assert client.get("/api/v1/products/acme/app/tags").json()[0]["status"] == "certified"
    push(session, "acme/app", "v2", V2)
    flags = client.get("/api/v1/orgs/acme/push-flags", headers=owner).json()
    assert [(f["tag"], f["digest"]) for f in flags] == [("v2", V2)]
    audit_page = client.get("/api/v1/orgs/acme/audit", headers=owner).json()
    assert "certification.approve" in {e["action"] for e in audit_page["items"]}
    assert client.get("/api/v1/admin/audit/verify", headers=admin).json()["ok"] is True
    assert client.get("/api/v1/admin/audit", headers=owner).status_code == 403


def test_pages(client: TestClient, session: Session) -> None:
    """The whole flow through the pages; renders every signing and audit template."""
    client.headers.update(HTML)
    world = _world(session)
    body = signed_body(world["key"], "acme/app", V1)
    client.post("/api/v1/signatures", json=body, headers=auth(world["robot"]))
    page = client.get("/products/acme/app")
    assert page.status_code == 200 and "Tags" in page.text and "Signed" in page.text
    admin = make_admin(session)
    login(client, "alice")
    page = client.get("/publish/acme/-/signing")
    assert page.status_code == 200 and "ci" in page.text
    new = new_key()
    added = submit(
        client,
        "/publish/acme/-/signing",
        "/publish/acme/-/signing/keys",
        {"label": "second", "public_pem": verify.public_pem(new)},
    )
    assert added.status_code == 200 and "is registered" in added.text
    refused = submit(
        client,
        "/publish/acme/-/signing",
        "/publish/acme/-/signing/keys",
        {"label": "x", "public_pem": "nonsense"},
    )
    assert refused.status_code == 422 and "PEM public key" in refused.text
    page = client.get("/publish/acme/app/certification")
    assert page.status_code == 200 and "Submit a version" in page.text
    sent = submit(
        client,
        "/publish/acme/app/certification",
        "/publish/acme/app/certification",
        {"tag": "v1"},
    )
    assert sent.status_code == 200 and "submitted for certification" in sent.text
    assert client.get("/publish/acme/-/audit").status_code == 200
    client.post("/logout", data={"csrf_token": ""})
    client.cookies.clear()
    login(client, admin.username)
    queue = client.get("/admin/certification")
    assert queue.status_code == 200 and "acme/app" in queue.text
    request_id = queue.text.split('href="/admin/certification/')[1].split('"')[0]
    review = f"/admin/certification/{request_id}"
    assert "Listing checklist" in client.get(review).text
    done = submit(client, review, review, {"decision": "approve", "note": "ok"})
    assert done.status_code == 200 and "is certified" in done.text
    push(session, "acme/app", "v2", V2)
    flagged = client.get("/admin/certification?status=all")
    assert "Unsigned pushes" in flagged.text
    log = client.get("/admin/audit?action=certification.approve&verify=1")
    assert log.status_code == 200 and "chain is intact" in log.text
    assert "certification.approve" in log.text
    assert client.get("/admin/audit?org=nosuch").status_code == 400
    assert client.get("/publish/acme/app/certification").status_code == 200
    assert client.get("/publish/acme/-/signing").status_code == 200
    mine = {p.relative_to(TEMPLATES_DIR).as_posix() for p in TEMPLATES_DIR.rglob("*.html")}
    assert {t for t in mine if t.startswith(("signing/", "audit/"))} == {
        "signing/_macros.html",
        "signing/keys.html",
        "signing/certification.html",
        "signing/admin_queue.html",
        "signing/admin_review.html",
        "audit/_table.html",
        "audit/admin_log.html",
        "audit/org_log.html",
    }
