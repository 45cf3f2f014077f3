"""Certification workflow states, and unsigned pushes to certified products."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.catalog import service as catalog
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from store.registry.models import HubRepository, HubTag
from store.signing import certification, publisher_keys, verify
from store.signing import service as signing
from tests.factories import make_account, make_admin, make_org, make_product
from tests.signing.helpers import REGISTRY_HOST, digest_of, new_key, push, signed_body

V1, V2, V3 = digest_of("v1"), digest_of("v2"), digest_of("v3")


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    product = make_product(session, acme, alice, "app")
    key = new_key()
    publisher_keys.add_key(session, org=acme, actor=alice, public_pem=verify.public_pem(key))
    return {
        "alice": alice,
        "acme": acme,
        "product": product,
        "key": key,
        "admin": make_admin(session),
    }


def _sign(session: Session, world, digest: str, tag: str | None = None) -> None:
    body = signed_body(world["key"], "acme/app", digest, tag=tag)
    signing.upload_signature(
        session,
        org=world["acme"],
        uploader=world["alice"],
        repository="acme/app",
        digest=digest,
        payload_b64=body["payload"],
        signature_b64=body["signature"],
        registry_host=REGISTRY_HOST,
        tag=tag,
    )


def test_submit_approve_ties_the_badge_to_the_digest(session: Session, world) -> None:
    product = world["product"]
    push(session, "acme/app", "v1", V1)
    _sign(session, world, V1, "v1")
    request = certification.submit(session, actor=world["alice"], product=product, tag="v1")
    assert (request.status, request.digest) == ("submitted", V1)
    with pytest.raises(Conflict):  # one pending review at a time
        certification.submit(session, actor=world["alice"], product=product, tag="v1")
    assert certification.queue(session) == [request]
    with pytest.raises(Forbidden):
        certification.approve(session, actor=world["alice"], request=request, settings=None)
    certification.approve(
        session, actor=world["admin"], request=request, note="looks good", settings=None
    )
    assert (request.status, request.certified_digest) == ("approved", V1)
    assert product.certified
    assert signing.certified_digest(session, product) == V1
    [tag] = signing.tag_statuses(session, product)
    assert tag.status == "certified"
    with pytest.raises(Conflict):
        certification.reject(
            session, actor=world["admin"], request=request, note="late", settings=None
        )


def test_approval_needs_a_valid_signature(session: Session, world) -> None:
    push(session, "acme/app", "v1", V1)
    request = certification.submit(
        session, actor=world["alice"], product=world["product"], tag="v1"
    )
    with pytest.raises(Conflict) as err:
        certification.approve(session, actor=world["admin"], request=request, settings=None)
    assert err.value.code == "unsigned"
    assert request.status == "submitted" and not world["product"].certified


def test_reject_needs_a_note(session: Session, world) -> None:
    push(session, "acme/app", "v1", V1)
    request = certification.submit(
        session, actor=world["alice"], product=world["product"], tag="v1"
    )
    with pytest.raises(ValidationFailed):
        certification.reject(
            session, actor=world["admin"], request=request, note=" ", settings=None
        )
    certification.reject(
        session, actor=world["admin"], request=request, note="no docs", settings=None
    )
    assert request.status == "rejected" and request.decided_at is not None
    assert not world["product"].certified


def test_submission_checks_the_tag(session: Session, world) -> None:
    product, alice = world["product"], world["alice"]
    with pytest.raises(NotFound):
        certification.submit(session, actor=alice, product=product, tag="nope")
    push(session, "acme/app", "v1", V1)
    with pytest.raises(Conflict) as err:
        certification.submit(session, actor=alice, product=product, tag="v1", digest=V2)
    assert err.value.code == "tag_moved"
    outsider = make_account(session, "mallory")
    with pytest.raises(Forbidden):
        certification.submit(session, actor=outsider, product=product, tag="v1")


def test_newer_approval_supersedes(session: Session, world) -> None:
    product, admin = world["product"], world["admin"]
    for tag, digest in (("v1", V1), ("v2", V2)):
        push(session, "acme/app", tag, digest)
        _sign(session, world, digest)
        request = certification.submit(session, actor=world["alice"], product=product, tag=tag)
        certification.approve(session, actor=admin, request=request, settings=None)
    statuses = {r.tag: r.status for r in certification.requests_of(session, product)}
    assert statuses == {"v1": "superseded", "v2": "approved"}
    assert signing.certified_digest(session, product) == V2


def _certify_v1(session: Session, world) -> None:
    push(session, "acme/app", "v1", V1)
    _sign(session, world, V1)
    request = certification.submit(
        session, actor=world["alice"], product=world["product"], tag="v1"
    )
    certification.approve(session, actor=world["admin"], request=request, settings=None)


def test_unsigned_push_to_certified_product_is_flagged(session: Session, world) -> None:
    product = world["product"]
    _certify_v1(session, world)
    push(session, "acme/app", "v1", V1)  # the certified digest again: fine
    push(session, "acme/app", "v2", V2)  # unsigned
    [flag] = signing.list_flags(session, org=world["acme"])
    assert (flag.tag, flag.digest, flag.pushed_by) == ("v2", V2, "robot:ci")
    assert signing.list_flags(session) == [flag]  # the admins' view
    statuses = {t.tag: (t.status, t.flagged) for t in signing.tag_statuses(session, product)}
    assert statuses == {"v1": ("certified", False), "v2": ("unsigned", True)}
    push(session, "acme/app", "v2", V2)  # the registry's retry: still one flag
    assert len(signing.list_flags(session, product=product, open_only=False)) == 1
    _sign(session, world, V2)  # CI signs a moment later: resolved
    assert signing.list_flags(session, org=world["acme"]) == []
    session.refresh(flag)
    assert flag.resolution == "signed"


def test_signed_push_and_uncertified_products_are_not_flagged(session: Session, world) -> None:
    push(session, "acme/app", "v1", V1)  # not certified yet
    assert signing.list_flags(session) == []
    _certify_v1(session, world)
    _sign(session, world, V3)
    push(session, "acme/app", "v3", V3)  # signed before the push
    assert signing.list_flags(session) == []


def test_dismiss_a_flag(session: Session, world) -> None:
    _certify_v1(session, world)
    push(session, "acme/app", "v2", V2)
    [flag] = signing.list_flags(session)
    with pytest.raises(Forbidden):
        signing.dismiss_flag(session, flag=flag, actor=make_account(session, "mallory"))
    signing.dismiss_flag(session, flag=flag, actor=world["alice"])
    assert flag.resolution == "dismissed" and signing.list_flags(session) == []


def test_badge_removed_by_admin_voids_certification(session: Session, world) -> None:
    _certify_v1(session, world)
    catalog.set_badges(session, actor=world["admin"], product=world["product"], certified=False)
    assert signing.certified_digest(session, world["product"]) is None
    push(session, "acme/app", "v2", V2)
    assert signing.list_flags(session) == []


def test_sync_writes_are_seen_too(session: Session, world) -> None:
    """`store registry sync` adds HubTag objects through the ORM, not the upsert."""
    _certify_v1(session, world)
    repo = session.scalar(select(HubRepository).where(HubRepository.name == "acme/app"))
    assert repo is not None
    session.add(HubTag(repository_id=repo.id, name="v9", digest=V3, pushed_by="sync"))
    session.flush()
    [flag] = signing.list_flags(session)
    assert (flag.tag, flag.digest) == ("v9", V3)
