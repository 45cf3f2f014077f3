"""Every model, imported in one place so Alembic and the app see the whole schema, and the
check that the models and the migrations agree."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

import store.billing.models  # noqa: F401  (orders, subscriptions, prices)
from store.accounts.models import (
    AccessToken,
    Account,
    AccountToken,
    Invitation,
    Membership,
    Namespace,
    Organization,
    RecoveryCode,
    WebSession,
)
from store.audit.models import AuditChainHead, AuditEvent
from store.builds.models import Build, BuildLogChunk, BuildRule, BuildSource
from store.catalog.models import Category, Product, Tier, product_categories
from store.db import Base
from store.idempotency import ProcessedEvent
from store.keys.models import SigningKey
from store.licensing.models import Entitlement, License
from store.mail.models import MailOptOut, OutboxMessage
from store.ratelimit import RateLimit
from store.registry.models import (
    HubRepository,
    HubTag,
    ManifestPull,
    PullCounter,
)
from store.search.engine_objects import include_object
from store.search.models import SearchDocument
from store.signing.models import (
    CertificationRequest,
    ContentSignature,
    PublisherKey,
    UnsignedPushFlag,
)

__all__ = [
    "AccessToken",
    "Account",
    "AccountToken",
    "AuditChainHead",
    "AuditEvent",
    "Base",
    "Build",
    "BuildLogChunk",
    "BuildRule",
    "BuildSource",
    "Category",
    "CertificationRequest",
    "ContentSignature",
    "Entitlement",
    "HubRepository",
    "HubTag",
    "Invitation",
    "License",
    "MailOptOut",
    "ManifestPull",
    "Membership",
    "Namespace",
    "Organization",
    "OutboxMessage",
    "ProcessedEvent",
    "Product",
    "PublisherKey",
    "PullCounter",
    "RateLimit",
    "RecoveryCode",
    "SearchDocument",
    "SigningKey",
    "Tier",
    "UnsignedPushFlag",
    "WebSession",
    "product_categories",
]


def schema_differences(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models ([] = agree).

    Objects owned by the full-text engines (created by the search migration, no model) are
    left out of the comparison.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object}
        )
        return list(compare_metadata(context, Base.metadata))
