"""A license never outlives its entitlement's revocation (a refund, a lost dispute) when
it is issued at the same instant in another transaction: on PostgreSQL, separate
connections; the revocation holds its transaction open while the other one runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import utcnow
from store.errors import StoreError
from store.keys.service import KeyRing
from store.licensing import entitlements
from store.licensing import service as licenses
from store.licensing.models import Entitlement, License
from store.licensing.signer import LicenseSigner
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.pg import scratch_sessions


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    with scratch_sessions("license_races") as sessions:
        yield sessions


@pytest.fixture
def signer(factory: sessionmaker[Session], tmp_path: Path) -> LicenseSigner:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=str(factory.kw["bind"].url),
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )
    return LicenseSigner(KeyRing(lambda: factory, settings.resolved_secret_key), settings)


def _entitlement(factory: sessionmaker[Session], signer: LicenseSigner, *, issued: bool) -> object:
    with factory() as session:
        owner = make_account(session)
        org = make_org(session, owner)
        product = make_product(session, org, owner, tiers=[paid_tier("pro", seats=5)])
        entitlement = entitlements.create_entitlement(
            session,
            tier=tier_of(product, "pro"),
            source="subscription",
            account=make_account(session),
            starts_at=utcnow() - timedelta(days=1),
            ends_at=utcnow() + timedelta(days=30),
        )
        licenses.signing_key(session, signer.keyring, signer.settings)
        if issued:
            licenses.current_license(session, signer.keyring, signer.settings, entitlement)
        session.commit()
        return entitlement.id


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


def _while_revoking(
    factory: sessionmaker[Session], ent_id: object, other: Callable[[Session], None]
) -> str:
    """Revoke in one transaction; run ``other`` in a second one before the first commits."""
    outcome: list[str] = []
    done = threading.Event()

    def run() -> None:
        with factory() as session:
            try:
                session.get(Entitlement, ent_id)  # read before the revocation commits
                other(session)
                session.commit()
                outcome.append("ok")
            except StoreError as exc:
                session.rollback()
                outcome.append(exc.code or type(exc).__name__)
            finally:
                done.set()

    with factory() as refunding:
        entitlement = refunding.get(Entitlement, ent_id)
        assert entitlement is not None
        entitlements.revoke(refunding, entitlement=entitlement, actor=None, reason="Refunded")
        thread = threading.Thread(target=run)
        thread.start()
        _waiting_or_done(factory, done)
        refunding.commit()
    thread.join(timeout=60)
    assert not thread.is_alive()
    return outcome[0]


def _unrevoked(factory: sessionmaker[Session], ent_id: object) -> int:
    with factory() as session:
        return int(
            session.scalar(
                select(func.count(License.id)).where(
                    License.entitlement_id == ent_id, License.revoked_at.is_(None)
                )
            )
            or 0
        )


def test_a_license_asked_for_while_it_is_revoked_is_not_issued(
    factory: sessionmaker[Session], signer: LicenseSigner
) -> None:
    ent_id = _entitlement(factory, signer, issued=False)

    def download(session: Session) -> None:
        entitlement = session.get(Entitlement, ent_id)
        assert entitlement is not None and entitlement.status == "active"
        licenses.current_license(session, signer.keyring, signer.settings, entitlement)

    assert _while_revoking(factory, ent_id, download) == "revoked"
    assert _unrevoked(factory, ent_id) == 0


def test_a_renewal_at_the_instant_of_a_refund_signs_no_license(
    factory: sessionmaker[Session], signer: LicenseSigner
) -> None:
    ent_id = _entitlement(factory, signer, issued=True)

    def renew(session: Session) -> None:
        entitlement = session.get(Entitlement, ent_id)
        assert entitlement is not None and entitlement.ends_at is not None
        entitlements.extend(
            session,
            entitlement=entitlement,
            ends_at=entitlement.ends_at + timedelta(days=30),
            signer=signer,
        )

    _while_revoking(factory, ent_id, renew)
    assert _unrevoked(factory, ent_id) == 0
    with factory() as session:
        assert session.get(Entitlement, ent_id).status == "revoked"  # type: ignore[union-attr]
