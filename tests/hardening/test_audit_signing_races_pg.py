"""A publisher key revoked at the same instant as it is used, on PostgreSQL (separate
connections; one transaction is held open while the other runs):

- a signature uploaded while the revocation commits is refused (``key_revoked``), as one
  uploaded after it: it is not recorded and resolves no unsigned-push flag;
- a certification approved while the revocation commits is refused (``unsigned``);
- a revocation made while an approval commits ends that certification (the badge goes);
- the same key registered twice at once: the second is refused (``key_exists``), no 500;
- two versions submitted for review at once: one waits for review, the other is refused
  (``review_pending``), as when they come one after the other.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account, Organization
from store.catalog.models import Product
from store.errors import StoreError
from store.signing import certification, publisher_keys, verify
from store.signing import service as signing
from store.signing.models import CertificationRequest, ContentSignature, PublisherKey
from tests.factories import make_account, make_admin, make_org, make_product
from tests.pg import scratch_sessions
from tests.signing.helpers import REGISTRY_HOST, digest_of, new_key, push, signed_body

V1 = digest_of("v1")


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    with scratch_sessions("signing_races") as sessions:
        yield sessions


class World:
    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.key = new_key()
        with factory() as session:
            alice = make_account(session, "alice")
            acme = make_org(session, alice, "acme")
            product = make_product(session, acme, alice, "app")
            make_admin(session)
            registered = publisher_keys.add_key(
                session, org=acme, actor=alice, public_pem=verify.public_pem(self.key)
            )
            push(session, "acme/app", "v1", V1)
            session.commit()
            self.alice_id, self.org_id = alice.id, acme.id
            self.product_id, self.key_id = product.id, registered.id

    def upload(self, session: Session) -> None:
        body = signed_body(self.key, "acme/app", V1, tag="v1")
        signing.upload_signature(
            session,
            org=session.get_one(Organization, self.org_id),
            uploader=session.get_one(Account, self.alice_id),
            repository="acme/app",
            digest=V1,
            payload_b64=body["payload"],
            signature_b64=body["signature"],
            registry_host=REGISTRY_HOST,
            tag="v1",
        )

    def revoke(self, session: Session) -> None:
        publisher_keys.revoke_key(
            session,
            key=session.get_one(PublisherKey, self.key_id),
            actor=session.get_one(Account, self.alice_id),
        )

    def submit(self, factory: sessionmaker[Session]) -> uuid.UUID:
        with factory() as session:
            request = certification.submit(
                session,
                actor=session.get_one(Account, self.alice_id),
                product=session.get_one(Product, self.product_id),
                tag="v1",
            )
            session.commit()
            return request.id

    def approve(self, request_id: uuid.UUID) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            admin = session.scalar(select(Account).where(Account.is_admin.is_(True)))
            assert admin is not None
            certification.approve(
                session,
                actor=admin,
                request=session.get_one(CertificationRequest, request_id),
                settings=None,
            )

        return run


def _waiting_or_done(factory: sessionmaker[Session], done: threading.Event) -> None:
    """Until the other transaction finished or waits for a lock (bounded)."""
    with factory() as probe:
        for _ in range(400):
            if done.is_set():
                return
            waiting = probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            probe.rollback()
            if waiting:
                return
            time.sleep(0.025)
    pytest.fail("the other transaction neither finished nor waited for a lock")


def _while_held(
    factory: sessionmaker[Session],
    first: Callable[[Session], None],
    other: Callable[[Session], None],
    *,
    prepare: Callable[[Session], None] = lambda session: None,
) -> str:
    """Run ``first`` in one transaction; run ``other`` in a second one (which has read
    what ``prepare`` reads) before the first commits. Returns how ``other`` ended."""
    outcome: list[str] = []
    done = threading.Event()

    def run() -> None:
        with factory() as session:
            try:
                prepare(session)
                other(session)
                session.commit()
                outcome.append("ok")
            except StoreError as exc:
                session.rollback()
                outcome.append(exc.code or type(exc).__name__)
            finally:
                done.set()

    with factory() as holding:
        first(holding)
        thread = threading.Thread(target=run)
        thread.start()
        _waiting_or_done(factory, done)
        holding.commit()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


def test_a_signature_uploaded_while_its_key_is_revoked_is_refused(
    factory: sessionmaker[Session],
) -> None:
    world = World(factory)

    def read_key(session: Session) -> None:
        assert session.get_one(PublisherKey, world.key_id).revoked_at is None

    outcome = _while_held(factory, world.revoke, world.upload, prepare=read_key)

    assert outcome == "key_revoked"
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(ContentSignature)) == 0


def test_a_certification_approved_while_its_key_is_revoked_is_refused(
    factory: sessionmaker[Session],
) -> None:
    world = World(factory)
    with factory() as session:
        world.upload(session)
        session.commit()
    request_id = world.submit(factory)

    outcome = _while_held(factory, world.revoke, world.approve(request_id))

    assert outcome == "unsigned"
    with factory() as session:
        assert session.get_one(Product, world.product_id).certified_at is None


def test_a_key_revoked_while_a_certification_is_approved_ends_it(
    factory: sessionmaker[Session],
) -> None:
    world = World(factory)
    with factory() as session:
        world.upload(session)
        session.commit()
    request_id = world.submit(factory)

    outcome = _while_held(factory, world.approve(request_id), world.revoke)

    assert outcome == "ok"
    with factory() as session:
        product = session.get_one(Product, world.product_id)
        assert not signing.is_signed(session, "acme/app", V1)
        assert product.certified_at is None


def _twice(factory: sessionmaker[Session], make: Callable[[Session], None]) -> str:
    return _while_held(factory, make, make)


def test_the_same_key_registered_twice_at_once(factory: sessionmaker[Session]) -> None:
    world = World(factory)
    other = new_key()

    def add(session: Session) -> None:
        publisher_keys.add_key(
            session,
            org=session.get_one(Organization, world.org_id),
            actor=session.get_one(Account, world.alice_id),
            public_pem=verify.public_pem(other),
        )

    assert _twice(factory, add) == "key_exists"
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(PublisherKey)) == 2


def test_two_versions_submitted_for_review_at_once(factory: sessionmaker[Session]) -> None:
    world = World(factory)

    def submit(session: Session) -> None:
        certification.submit(
            session,
            actor=session.get_one(Account, world.alice_id),
            product=session.get_one(Product, world.product_id),
            tag="v1",
        )

    assert _twice(factory, submit) == "review_pending"
    with factory() as session:
        waiting = select(func.count()).where(CertificationRequest.status == "submitted")
        assert session.scalar(waiting) == 1
