"""The certified badge lasts only while its digest is validly signed: revoking the key that
signed the certified digest ends the certification at once (the product's badge, the
"certified" filter of the catalog and of search, the tag's status), on SQLite and
PostgreSQL. A digest still signed by another key of the publisher keeps it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.audit.models import AuditEvent
from store.catalog import service as catalog
from store.signing import certification, publisher_keys, verify
from store.signing import service as signing
from store.signing.models import PublisherKey
from tests.factories import make_account, make_admin, make_org, make_product
from tests.signing.helpers import REGISTRY_HOST, digest_of, new_key, push, signed_body

V1 = digest_of("v1")


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    product = make_product(session, acme, alice, "app")
    return {"alice": alice, "acme": acme, "product": product, "admin": make_admin(session)}


def _register(session: Session, world, key: verify.PrivateKey) -> PublisherKey:
    return publisher_keys.add_key(
        session, org=world["acme"], actor=world["alice"], public_pem=verify.public_pem(key)
    )


def _sign(session: Session, world, key: verify.PrivateKey, digest: str) -> None:
    body = signed_body(key, "acme/app", digest, tag="v1")
    signing.upload_signature(
        session,
        org=world["acme"],
        uploader=world["alice"],
        repository="acme/app",
        digest=digest,
        payload_b64=body["payload"],
        signature_b64=body["signature"],
        registry_host=REGISTRY_HOST,
        tag="v1",
    )


def _certify(session: Session, world) -> None:
    request = certification.submit(
        session, actor=world["alice"], product=world["product"], tag="v1"
    )
    certification.approve(session, actor=world["admin"], request=request, settings=None)


def _certified_in_catalog(session: Session) -> list[str]:
    flt = catalog.ProductFilter(badge="certified")
    return [p.repository for p in catalog.list_products(session, flt).items]


def test_revoking_the_key_of_the_certified_digest_ends_the_badge(
    session: Session, client: TestClient, world
) -> None:
    product = world["product"]
    key = new_key()
    registered = _register(session, world, key)
    push(session, "acme/app", "v1", V1)
    _sign(session, world, key, V1)
    _certify(session, world)
    session.commit()
    assert product.certified and _certified_in_catalog(session) == ["acme/app"]

    publisher_keys.revoke_key(session, key=registered, actor=world["alice"])
    session.commit()

    # Nothing certified is signed any more: neither the tag nor the product is certified.
    [tag] = signing.tag_statuses(session, product)
    assert tag.status == "unsigned"
    assert not product.certified
    assert _certified_in_catalog(session) == []
    assert signing.certified_digest(session, product) is None
    page = client.get("/api/v1/products/acme/app")
    assert page.status_code == 200 and page.json()["certified"] is False
    # The end of the certification is in the audit log, with its cause.
    [event] = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "product.badges")
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    assert event.details["certified"] is False
    assert event.details["reason"] == f"signing key {registered.fingerprint} revoked"


def test_a_certified_digest_signed_by_another_valid_key_keeps_its_badge(
    session: Session, world
) -> None:
    product = world["product"]
    first, second = new_key(), new_key("ed25519")
    registered = _register(session, world, first)
    _register(session, world, second)
    push(session, "acme/app", "v1", V1)
    _sign(session, world, first, V1)
    _sign(session, world, second, V1)
    _certify(session, world)

    publisher_keys.revoke_key(session, key=registered, actor=world["alice"])

    assert product.certified
    assert _certified_in_catalog(session) == ["acme/app"]
    [tag] = signing.tag_statuses(session, product)
    assert tag.status == "certified"
