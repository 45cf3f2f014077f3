"""Signed content and certification, in a real browser: a publisher registers a signing key,
sees a pushed tag unsigned, uploads a signature (the JSON API, with a personal token made on
the tokens page), sees the tag signed and submits the version for certification; an
administrator reviews it (signature status, listing checklist), approves it with a note, and
the product page shows the certified badge; both look at the audit log. Finally the
administrator removes the certification from the products page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.sync_api import Page, expect

from tests.browser.conftest import NewPage
from tests.browser.flows import flash, log_in
from tests.browser.seed import CERT_DIGEST as DIGEST
from tests.browser.seed import CERT_ORG as ORG
from tests.browser.seed import CERT_OWNER, CERT_TAG
from tests.browser.seed import CERT_PRODUCT as NAME
from tests.browser.support import DEMO_PASSWORD, REGISTRY_HOST, Shots

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

REPOSITORY = f"{ORG}/{NAME}"
LABEL = "ci-e2e"
NOTE = "Signature and listing checked."


def signature_body(key: ec.EllipticCurvePrivateKey, fingerprint: str) -> dict[str, str]:
    """What `store sign` uploads: cosign's simple-signing payload for the digest, signed
    with ECDSA P-256 / SHA-256 (DER), both base64."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{REGISTRY_HOST}/{REPOSITORY}"},
                "image": {"docker-manifest-digest": DIGEST},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return {
        "repository": REPOSITORY,
        "digest": DIGEST,
        "tag": CERT_TAG,
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(signature).decode(),
        "key_fingerprint": fingerprint,
    }


def tag_row(page: Page, tag: str = CERT_TAG):
    return page.locator("#tags tbody tr", has=page.locator("td code", has_text=tag))


def test_sign_certify_and_audit(new_page: NewPage, shots: Shots) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    fingerprint = hashlib.sha256(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).hexdigest()

    # --- the publisher ------------------------------------------------------------------
    page = new_page()
    log_in(page, CERT_OWNER, DEMO_PASSWORD)

    # Register the public half of a signing key.
    page.goto(f"/publish/{ORG}")
    page.get_by_role("link", name="Signing keys").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Signing keys")
    keys = page.get_by_role("region", name="Registered keys", exact=True)
    expect(keys.get_by_text("No keys yet.")).to_be_visible()
    page.get_by_label("Label").fill(LABEL)
    page.get_by_label("Public key (PEM)").fill(public_pem)
    page.get_by_role("button", name="Register key").click()
    expect(flash(page, f"Key {fingerprint[:16]}… is registered.")).to_be_visible()
    row = keys.locator("tbody tr", has_text=LABEL)
    expect(row).to_contain_text(fingerprint)
    expect(row).to_contain_text("ecdsa")
    expect(row.locator(".status")).to_have_text("Active")
    shots(page, "signing-keys")

    # The pushed tag is unsigned, on the product page and the certification page.
    page.goto(f"/products/{REPOSITORY}")
    expect(tag_row(page)).to_contain_text("Unsigned")
    page.goto(f"/publish/{REPOSITORY}")
    page.get_by_role("link", name="Tags and certification").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Certification of Gizmo Gateway")
    tags = page.get_by_role("region", name="Tags", exact=True)
    expect(tags.locator("tbody tr", has_text=CERT_TAG)).to_contain_text("Unsigned")
    expect(page.get_by_role("region", name="Requests", exact=True)).to_contain_text(
        "No requests yet."
    )

    # A personal token with the api scope, to upload the signature as CI would.
    page.goto("/my/tokens")
    page.get_by_label("Name").fill("signing")
    page.get_by_role("checkbox", name=re.compile("^api")).check()
    page.get_by_role("button", name="Create token").click()
    token = page.get_by_label("New token").inner_text().strip()
    assert token.startswith("stp_")  # a personal token
    response = page.request.post(
        "/api/v1/signatures",
        data=signature_body(key, fingerprint),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status == 201, response.text()
    assert response.json()["digest"] == DIGEST

    # Signed now, by the registered key.
    page.goto(f"/products/{REPOSITORY}")
    expect(tag_row(page)).to_contain_text("Signed")
    expect(tag_row(page)).to_contain_text(f"by {LABEL}")
    expect(page.locator(".badges .badge-certified")).to_have_count(0)
    shots(page, "product-signed")

    # Submit the version (the tag is filled in; its current digest is the default).
    page.goto(f"/publish/{REPOSITORY}/certification")
    expect(page.get_by_label("Tag", exact=True)).to_have_value(CERT_TAG)
    page.get_by_role("button", name="Submit for certification").click()
    expect(flash(page, f"{REPOSITORY}:{CERT_TAG} is submitted for certification.")).to_be_visible()
    requests = page.get_by_role("region", name="Requests", exact=True)
    expect(requests.locator("tbody tr")).to_have_count(1)
    expect(requests.locator(".status")).to_have_text("Submitted")
    shots(page, "certification-submitted")

    # --- the administrator --------------------------------------------------------------
    admin = new_page()
    log_in(admin, "operator", DEMO_PASSWORD)
    admin.goto("/admin")
    tabs = admin.get_by_role("navigation", name="Administration")
    tabs.get_by_role("link", name="Certification").click()
    queued = admin.locator("tbody tr", has_text=REPOSITORY)
    expect(queued.locator(".status")).to_have_text("Submitted")
    shots(admin, "review-queue")
    queued.get_by_role("link", name="Gizmo Gateway").click()
    expect(admin.get_by_role("heading", level=2)).to_contain_text("Certification of Gizmo Gateway")
    signature = admin.get_by_role("region", name="Signature of the digest")
    expect(signature).to_contain_text(DIGEST)
    expect(signature).to_contain_text("Signed by a registered, unrevoked key of the publisher.")
    expect(signature).to_contain_text(f"Key {fingerprint[:16]}… {LABEL}")
    expect(signature).to_contain_text(f"by {CERT_OWNER}")
    checklist = admin.get_by_role("region", name="Listing checklist")
    expect(checklist).to_contain_text("Published: done")
    expect(checklist).to_contain_text("At least one active tier: done")
    expect(checklist).to_contain_text("Verified publisher: missing")
    expect(
        admin.get_by_role("region", name="Tags", exact=True).locator("tbody tr")
    ).to_contain_text("Signed")
    admin.get_by_label("Note to the publisher").fill(NOTE)
    shots(admin, "review")
    admin.get_by_role("button", name="Approve and certify").click()
    expect(flash(admin, f"{REPOSITORY}:{CERT_TAG} is certified.")).to_be_visible()
    expect(admin.locator("tbody tr", has_text=REPOSITORY)).to_have_count(0)  # left the queue
    admin.get_by_label("Status").select_option("approved")
    admin.get_by_role("button", name="Show").click()
    expect(admin.locator("tbody tr", has_text=REPOSITORY).locator(".status")).to_have_text(
        "Approved"
    )

    # The product page: the certified badge, and the tag is the certified version.
    admin.goto(f"/products/{REPOSITORY}")
    expect(admin.locator(".badges .badge-certified")).to_have_text("Certified")
    expect(tag_row(admin).locator(".badge-certified")).to_have_text("Certified")
    shots(admin, "product-certified")

    # The audit log, filtered by action.
    admin.goto("/admin")
    tabs.get_by_role("link", name="Audit log").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Administration")
    admin.get_by_label("Action").select_option("certification.approve")
    admin.get_by_role("button", name="Filter").click()
    expect(admin).to_have_url(re.compile(r"action=certification\.approve"))
    events = admin.locator("main tbody tr")
    expect(events).not_to_have_count(0)
    for action in events.locator("td:nth-child(4)").all_inner_texts():
        assert action == "certification.approve"
    approved = events.filter(has_text=REPOSITORY)
    expect(approved).to_have_count(1)
    expect(approved).to_contain_text("operator")
    expect(approved).to_contain_text(NOTE)
    admin.get_by_role("link", name="Verify the chain").click()
    expect(admin.get_by_role("status").filter(has_text="The chain is intact")).to_be_visible()
    shots(admin, "audit-log")

    # --- the publisher again: the decision and the organization's own audit log ---------
    page.reload()
    expect(page.get_by_role("region", name="Requests", exact=True).locator(".status")).to_have_text(
        "Approved"
    )
    expect(page.get_by_role("region", name="Requests", exact=True)).to_contain_text(NOTE)
    page.goto(f"/publish/{ORG}")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log of Certco End-to-End")
    actions = page.locator("main tbody tr td:nth-child(4)").all_inner_texts()
    for action in (
        "signing_key.add",
        "signature.add",
        "certification.submit",
        "certification.approve",
    ):
        assert action in actions, actions
    assert "auth.login" not in actions  # only what concerns the organization
    shots(page, "org-audit-log")

    # --- certification goes through review; the products page can only remove it ---------
    admin.goto(f"/admin/products?q={NAME}")
    row = admin.locator("tbody tr", has_text=REPOSITORY)
    expect(row.get_by_role("checkbox", name="Certified")).to_have_count(0)
    row.get_by_role("button", name=f"Remove certification of {REPOSITORY}").click()
    expect(flash(admin, f"The certification of {REPOSITORY} is removed.")).to_be_visible()
    expect(row.get_by_role("link", name=f"Certification review of {REPOSITORY}")).to_be_visible()
    admin.goto(f"/products/{REPOSITORY}")
    expect(admin.locator(".badges .badge-certified")).to_have_count(0)
    expect(tag_row(admin)).to_contain_text("Signed")
