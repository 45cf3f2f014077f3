"""A license key retired on one host while another host signs a license with it, on
PostgreSQL (separate connections; the retirement's transaction is held open while the
license is issued): the license is signed by the key that signs now, never by the one
being retired (whose documents verifiers stop trusting)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.keys import service as keys
from store.keys.service import KeyRing
from store.licensing import service as licensing
from store.licensing.models import Entitlement
from tests.licensing.conftest import make_shop
from tests.pg import scratch_sessions


@pytest.fixture
def factory() -> Iterator[sessionmaker[Session]]:
    with scratch_sessions("license_key_retire") as sessions:
        yield sessions


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


def test_a_license_issued_while_its_key_is_retired_is_signed_by_the_new_key(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=str(factory.kw["bind"].url),
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
    )
    # This host loaded the signing key and looks again only every 300 s.
    here = KeyRing(lambda: factory, settings.resolved_secret_key, refresh_seconds=300)
    with factory() as session:
        shop = make_shop(session)
        old = licensing.current_license(session, here, settings, shop.entitlement).kid
        session.commit()
        entitlement_id = shop.entitlement.id
    assert here.signer("license").kid == old
    with factory() as session:  # another host rotates
        new = keys.rotate(session, purpose="license", secret=settings.resolved_secret_key).kid
        session.commit()

    signed_by: list[str] = []
    done = threading.Event()

    def issue() -> None:
        try:
            with factory() as session:
                entitlement = session.get_one(Entitlement, entitlement_id)
                signed_by.append(licensing.issue_license(session, here, settings, entitlement).kid)
                session.commit()
        finally:
            done.set()

    with factory() as retiring:  # another host's `store keys retire`
        keys.retire(retiring, kid=old, token_ttl=settings.registry_token_ttl)
        thread = threading.Thread(target=issue)
        thread.start()
        _waiting_or_done(factory, done)
        retiring.commit()
    thread.join(timeout=60)
    assert not thread.is_alive()

    assert signed_by == [new]
