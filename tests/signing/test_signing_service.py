"""Keys and signatures in the database: registration, upload, rejection reasons, revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from store.errors import Conflict, Forbidden
from store.signing import publisher_keys, verify
from store.signing import service as signing
from tests.factories import make_account, make_org, make_product
from tests.signing.helpers import REGISTRY_HOST, digest_of, new_key, push, signed_body

DIGEST = digest_of("v1")


@pytest.fixture
def world(session: Session) -> dict[str, object]:
    alice = make_account(session, "alice")
    acme = make_org(session, alice, "acme")
    product = make_product(session, acme, alice, "app")
    return {"alice": alice, "acme": acme, "product": product}


def _register(session: Session, world: dict[str, object], key: verify.PrivateKey, label: str = ""):
    return publisher_keys.add_key(
        session,
        org=world["acme"],  # type: ignore[arg-type]
        actor=world["alice"],  # type: ignore[arg-type]
        public_pem=verify.public_pem(key),
        label=label,
    )


def _upload(session: Session, world: dict[str, object], body: dict[str, str], **over: object):
    kwargs: dict[str, object] = {
        "org": world["acme"],
        "uploader": world["alice"],
        "repository": body["repository"],
        "digest": body["digest"],
        "payload_b64": body["payload"],
        "signature_b64": body["signature"],
        "registry_host": REGISTRY_HOST,
        "tag": body.get("tag"),
    }
    kwargs.update(over)
    return signing.upload_signature(session, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", verify.ALGORITHMS)
def test_upload_round_trip_marks_the_tag_signed(session: Session, world, alg: str) -> None:
    key = new_key(alg)
    registered = _register(session, world, key, "ci")
    push(session, "acme/app", "v1", DIGEST)
    [tag] = signing.tag_statuses(session, world["product"])
    assert tag.status == "unsigned"
    sig = _upload(session, world, signed_body(key, "acme/app", DIGEST, tag="v1"))
    assert sig.key_id == registered.id and sig.product_id == world["product"].id
    [tag] = signing.tag_statuses(session, world["product"])
    assert tag.status == "signed" and tag.signers == ["ci"]
    again = _upload(session, world, signed_body(key, "acme/app", DIGEST))
    assert again.id == sig.id  # idempotent


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda k, o: signed_body(o, "acme/app", DIGEST), "bad_signature"),  # unregistered key
        (
            lambda k, o: signed_body(k, "acme/app", DIGEST, payload_digest=digest_of("x")),
            "wrong_digest",
        ),
        (
            lambda k, o: signed_body(k, "acme/app", DIGEST, reference="acme/other"),
            "wrong_repository",
        ),
        (lambda k, o: signed_body(k, "acme/app", DIGEST, tamper=True), "bad_signature"),
        (lambda k, o: signed_body(k, "other/app", DIGEST), "wrong_namespace"),
    ],
)
def test_rejections_name_the_reason(session: Session, world, make, code: str) -> None:
    key, other = new_key(), new_key("ed25519")
    _register(session, world, key)
    with pytest.raises(verify.SignatureRejected) as err:
        _upload(session, world, make(key, other))
    assert err.value.code == code


def test_no_keys_at_all(session: Session, world) -> None:
    with pytest.raises(verify.SignatureRejected) as err:
        _upload(session, world, signed_body(new_key(), "acme/app", DIGEST))
    assert err.value.code == "unknown_key"


def test_revoked_key_invalidates_from_revocation_on(session: Session, world) -> None:
    key = new_key()
    registered = _register(session, world, key)
    push(session, "acme/app", "v1", DIGEST)
    _upload(session, world, signed_body(key, "acme/app", DIGEST))
    assert signing.is_signed(session, "acme/app", DIGEST)
    publisher_keys.revoke_key(session, key=registered, actor=world["alice"])
    revoked_at = registered.revoked_at
    assert revoked_at is not None
    assert not signing.is_signed(session, "acme/app", DIGEST)
    before = signing.valid_signatures(
        session, "acme/app", [DIGEST], at=revoked_at - timedelta(seconds=1)
    )
    assert before[DIGEST]  # it counted until the revocation
    [tag] = signing.tag_statuses(session, world["product"])
    assert tag.status == "unsigned"
    with pytest.raises(verify.SignatureRejected) as err:
        _upload(session, world, signed_body(key, "acme/app", digest_of("v2")))
    assert err.value.code == "key_revoked"


def test_key_registration_rules(session: Session, world) -> None:
    key = new_key("ed25519")
    _register(session, world, key)
    with pytest.raises(Conflict):
        _register(session, world, key)
    bob = make_account(session, "bob")
    with pytest.raises(Forbidden):
        publisher_keys.add_key(
            session,
            org=world["acme"],
            actor=bob,
            public_pem=verify.public_pem(new_key()),
        )
    from store.accounts import service as accounts

    editor = make_account(session, "eddie")
    accounts.add_member(
        session,
        org=world["acme"],
        actor=make_account(session, "operator", is_admin=True),
        account=editor,
        role="editor",
    )
    with pytest.raises(Forbidden):  # owners only
        publisher_keys.add_key(
            session, org=world["acme"], actor=editor, public_pem=verify.public_pem(new_key())
        )
    [found] = [k for k in publisher_keys.list_keys(session, world["acme"]) if k.alg == "ed25519"]
    assert publisher_keys.get_key(session, world["acme"], found.fingerprint[:12]).id == found.id
