"""A repository as its page and API show it: tags with digest, size and platforms,
signature and certification status, pulls, stars, the product it belongs to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store.catalog.models import Product
from store.registry import details, hub
from store.registry.models import HubRepository, HubTag
from store.registry.sync import RegistryClient
from store.signing import service as signing


@dataclass
class TagView:
    tag: str
    digest: str
    media_type: str
    pushed_at: datetime
    pushed_by: str
    platforms: list[dict[str, Any]] | None  # None: not read from the registry yet
    signers: list[str] = field(default_factory=list)
    certified: bool = False
    flagged: bool = False

    @property
    def size(self) -> int | None:
        """Compressed size (layers and config) of the largest platform."""
        if not self.platforms:
            return None
        return max(int(p.get("size") or 0) for p in self.platforms)

    @property
    def signed(self) -> bool:
        return bool(self.signers)

    @property
    def status(self) -> str:
        if self.certified:
            return "certified"
        return "signed" if self.signed else "unsigned"


def platform_label(platform: dict[str, Any]) -> str:
    parts = [platform.get("os") or "?", platform.get("architecture") or "?"]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


def listed_product(session: Session, repo: HubRepository) -> Product | None:
    """The published product the repository belongs to (its page links there)."""
    product = hub.product_of(session, repo.name)
    return product if product is not None and product.status == "published" else None


def tags(
    session: Session,
    repo: HubRepository,
    *,
    factory: sessionmaker[Session] | None = None,
    client: RegistryClient | None = None,
) -> list[TagView]:
    """The repository's tags, newest push first. With ``factory`` and ``client``, platforms
    not read yet are read from the registry now (store.registry.details)."""
    rows = list(
        session.scalars(
            select(HubTag)
            .where(HubTag.repository_id == repo.id)
            .order_by(HubTag.pushed_at.desc(), HubTag.name)
        )
    )
    read = details.fill(factory, client, repo.name, rows) if factory and client else {}
    signatures = signing.valid_signatures(session, repo.name, [t.digest for t in rows])
    product = hub.product_of(session, repo.name)
    certified = None
    if product is not None and product.repository == repo.name:
        certified = signing.certified_digest(session, product)
    views = []
    for row in rows:
        signers = [s.key.label or s.key.fingerprint[:16] for s in signatures.get(row.digest, [])]
        views.append(
            TagView(
                tag=row.name,
                digest=row.digest,
                media_type=row.media_type,
                pushed_at=row.pushed_at,
                pushed_by=row.pushed_by,
                platforms=read.get(row.name, row.platforms),
                signers=signers,
                certified=bool(signers) and certified == row.digest,
            )
        )
    return views
