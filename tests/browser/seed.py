"""The browser tests' store, written with the services into its database before the server
starts: the demo catalog (`store demo seed`), pull counts (as the registry's notifications
would record them) and paid orders (as the test gateway records them).

Passwords are hashed with the test suite's cheap argon2 parameters (tests/conftest.py), so
logging in is quick; the server verifies them like any other hash."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete
from sqlalchemy.orm import Session

from store import demo, migrate
from store.accounts import service as accounts
from store.billing import orders
from store.billing.config import BillingSettings
from store.billing.gateway import PaymentInput
from store.billing.runtime import build_billing
from store.billing.test_gateway import CARD_SUCCESS
from store.catalog import service as catalog
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope, utcnow
from store.registry import hub
from store.registry.models import PullCounter
from store.signing import certification, publisher_keys

# The publisher test creates this product; the registry saw pushes and pulls of the
# repository before it was listed, so its dashboard has a pulls chart to show.
PUBLISHER_ORG = "acme-e2e"
PUBLISHER_PRODUCT = "widget"
PULLED = ("northwind/pgvault", f"{PUBLISHER_ORG}/{PUBLISHER_PRODUCT}")
# A product the registry saw a `latest` push of (the demo pushes only certified ones): the
# customer test reads its pull command on the product page and under My content.
PUSHED = ("northwind/keystone-cache", "latest", "sha256:" + "ca11ab1e" * 8)
# Orders the customer of the demo (casey) paid for: one for the admin to refund, one that
# gives northwind a sales chart.
REFUND_PURCHASE = ("neuron-works/feature-store", "perpetual")
SALES_PURCHASE = ("northwind/blockstore-volume", "perpetual")
# A running yearly subscription of casey's: its billing page offers a plan change.
SUBSCRIPTION = ("lumen-labs/tracewise", "business")
# The certification test's publisher (password: the demo accounts'): an owner, an
# organization and a published product whose repository the registry saw one tag of
# (nothing signed, nothing certified yet).
CERT_OWNER = "cora-e2e"
CERT_ORG = "certco-e2e"
CERT_PRODUCT = "gizmo"
CERT_TAG = "1.0"
CERT_DIGEST = "sha256:" + "c0ffee" * 10 + "0123"
# A second product of that organization with an unsigned version waiting for review (the
# accessibility check looks at the review page), and a signing key of northwind (so its
# signing keys page has one to show).
WAITING_PRODUCT = ("doohickey", "Doohickey Daemon", "2.0", "sha256:" + "d00d1e" * 10 + "4567")


@dataclass(frozen=True)
class Seeded:
    refund_order_id: uuid.UUID
    sales_order_id: uuid.UUID
    pulls: dict[str, int]


def store(data_dir: Path, *, demo_password: str, registry_host: str) -> Seeded:
    """The schema, the demo catalog (as `store demo seed` loads it), and the extras."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        database_url=f"sqlite:///{(data_dir / 'store.db').resolve()}",
        environment="development",
    )
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    migrate.upgrade(engine)
    with session_scope(make_sessionmaker(engine)) as session:
        demo.seed(session, password=demo_password, registry_host=registry_host, settings=settings)
    billing = build_billing(BillingSettings(_env_file=None, gateway="test"), settings)  # type: ignore[call-arg]
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            pulls = _pulls(session)
            name, tag, digest = PUSHED
            hub.record_push(
                session,
                name=name,
                digest=digest,
                media_type="application/vnd.oci.image.manifest.v1+json",
                size=2048,
                tag=tag,
                actor="northwind:robot:ci",
                at=utcnow(),
            )
        with session_scope(make_sessionmaker(engine)) as session:
            _certification_publisher(session, password=demo_password)
        paid = []
        for repository, tier_slug in (REFUND_PURCHASE, SALES_PURCHASE, SUBSCRIPTION):
            with session_scope(make_sessionmaker(engine)) as session:
                customer = accounts.get_account_by_username(session, "casey")
                product = catalog.get_product_by_repository(session, repository)
                tier = catalog.get_tier_by_slug(session, product, tier_slug)
                order = orders.start_checkout(session, billing, account=customer, tier=tier)
                session.commit()
                orders.pay(
                    session, billing, order=order, payment=PaymentInput(card_number=CARD_SUCCESS)
                )
                session.flush()
                assert order.status == "paid", order.status
                paid.append(order.id)
    finally:
        engine.dispose()
    return Seeded(refund_order_id=paid[0], sales_order_id=paid[1], pulls=pulls)


def _certification_publisher(session: Session, *, password: str) -> None:
    """The certification test's publisher with its products and pushed tags (as the
    registry's push notifications record them), one version waiting for review, and a
    signing key of northwind."""
    owner = accounts.create_account(
        session,
        username=CERT_OWNER,
        email=f"{CERT_OWNER}@example.test",
        password=password,
        display_name="Cora",
        email_verified=True,
    )
    org = accounts.create_organization(
        session, owner=owner, slug=CERT_ORG, name="Certco End-to-End"
    )
    for slug, title, tag, digest in (
        (CERT_PRODUCT, "Gizmo Gateway", CERT_TAG, CERT_DIGEST),
        WAITING_PRODUCT,
    ):
        product = catalog.create_product(
            session,
            actor=owner,
            org=org,
            kind="image",
            slug=slug,
            title=title,
            summary=f"{title}, signed and certified in browser tests.",
            categories=["developer-tools"],
            platforms=["linux/amd64"],
        )
        catalog.create_tier(
            session, actor=owner, product=product, slug="community", name="Community"
        )
        catalog.set_status(session, actor=owner, product=product, status="published")
        hub.record_push(
            session,
            name=product.repository,
            digest=digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            size=1234,
            tag=tag,
            actor=f"{CERT_ORG}:robot:ci",
            at=utcnow(),
        )
    certification.submit(session, actor=owner, product=product, tag=WAITING_PRODUCT[2])
    public_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    publisher_keys.add_key(
        session,
        org=accounts.get_organization(session, "northwind"),
        actor=accounts.get_account_by_username(session, "nora"),
        public_pem=public_pem,
        label="release-2026",
    )


def _pulls(session: Session) -> dict[str, int]:
    """A month of pulls with a weekly rhythm, growing, so the chart has a shape. One pull goes
    through the registry-event path (creating the hub records); the daily counters are then
    written directly, which is quicker than hundreds of single events."""
    now = utcnow()
    totals = {}
    for n, repository in enumerate(PULLED):
        hub.record_pull(session, name=repository, at=now)
        repo = hub.get_repository(session, repository)
        assert repo is not None
        counts = {
            (now - timedelta(days=ago)).date(): (30 - ago) // 4
            + (3 if ago % 7 in (1, 2) else 0)
            + n
            for ago in range(30)
        }
        session.execute(delete(PullCounter).where(PullCounter.repository_id == repo.id))
        session.add_all(
            PullCounter(repository_id=repo.id, day=day, count=count)
            for day, count in counts.items()
        )
        repo.pull_count = totals[repository] = sum(counts.values())
    session.flush()
    return totals
