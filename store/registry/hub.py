"""The hub's records of what the registry holds: repositories, tags, pull counts.

Writes that several store processes may make at once (a new repository, a tag, a day's
counter) are single upserts (``INSERT … ON CONFLICT``) on SQLite and PostgreSQL, so
concurrent events never trip over a unique constraint.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.accounts.models import Namespace
from store.catalog.models import Product
from store.db import new_id, utcnow
from store.errors import ValidationFailed
from store.registry import grants
from store.registry.models import HubRepository, HubTag, ManifestPull, PullCounter

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.oci.artifact.manifest.v1+json",
    }
)


def _insert(session: Session, table: type) -> sqlite.Insert | postgresql.Insert:
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


VISIBILITIES = ("private", "public")


def product_of(session: Session, name: str) -> Product | None:
    """The product a repository belongs to (its own, or its parent's for a sub-repository)."""
    repository = grants.product_repository(name)
    if not repository:
        return None
    return session.scalar(select(Product).where(Product.repository == repository))


def anonymous_facts(name: str, product: Product | None, visibility: str) -> grants.RepoFacts:
    """The facts of a repository as anyone sees them (no role, no entitlement)."""
    return grants.RepoFacts(
        name=name,
        product_id=product.id if product is not None else None,
        product_status=product.status if product is not None else None,
        product_public=product.is_public if product is not None else False,
        marked_public=visibility == "public",
    )


def is_private(name: str, product: Product | None, visibility: str) -> bool:
    """Private = the rule does not let anyone pull it (search shows it only to those who
    may: :mod:`store.search.documents`)."""
    return not anonymous_facts(name, product, visibility).public


def ensure_repository(session: Session, name: str) -> HubRepository:
    """The hub record of a repository, created if new (with its namespace's default
    visibility); its visibility recomputed."""
    namespace = name.partition("/")[0] if "/" in name else ""
    default = func.coalesce(
        select(Namespace.default_visibility).where(Namespace.name == namespace).scalar_subquery(),
        "private",
    )
    stmt = (
        _insert(session, HubRepository)
        .values(
            id=new_id(),
            name=name,
            namespace=namespace,
            description="",
            readme_md="",
            private=True,
            visibility=default,
            pull_count=0,
            star_count=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(HubRepository.__table__.c.id)
    )
    created = session.execute(stmt).first() is not None
    repo = session.scalars(
        select(HubRepository)
        .where(HubRepository.name == name)
        .execution_options(populate_existing=True)
    ).one()
    private = is_private(name, product_of(session, name), repo.visibility)
    if repo.private != private:
        repo.private = private
    elif created:
        # The insert's values are inside the statement, out of the search indexer's sight.
        from store.search import indexer

        indexer.refresh(session, repositories=[repo.id])
    return repo


def refresh_visibility(session: Session, name: str) -> None:
    """Recompute ``private`` of a product's repository and its sub-repositories (call when
    the product's tiers or status change, or it is deleted)."""
    product = product_of(session, name)
    under = HubRepository.name.startswith(name + "/", autoescape=True)
    repos = session.scalars(select(HubRepository).where((HubRepository.name == name) | under))
    for repo in repos:
        repo.private = is_private(repo.name, product, repo.visibility)
    session.flush()


def set_visibility(session: Session, *, name: str, visibility: str) -> HubRepository:
    """The namespace owner's setting for one repository (created in the hub if new)."""
    if visibility not in VISIBILITIES:
        raise ValidationFailed(
            f"Visibility must be one of {', '.join(VISIBILITIES)}", code="bad_visibility"
        )
    repo = ensure_repository(session, name)
    repo.visibility = visibility
    repo.private = is_private(name, product_of(session, name), visibility)
    session.flush()
    return repo


def record_push(
    session: Session,
    *,
    name: str,
    digest: str,
    media_type: str,
    size: int,
    tag: str | None,
    actor: str,
    at: datetime,
) -> HubRepository:
    repo = ensure_repository(session, name)
    session.execute(
        update(HubRepository)
        .where(HubRepository.id == repo.id)
        .where((HubRepository.last_pushed_at.is_(None)) | (HubRepository.last_pushed_at < at))
        .values(last_pushed_at=at)
    )
    if tag:
        stmt = _insert(session, HubTag).values(
            id=new_id(),
            repository_id=repo.id,
            name=tag,
            digest=digest,
            media_type=media_type,
            size=size,
            pushed_at=at,
            pushed_by=actor[:128],
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["repository_id", "name"],
            set_={
                "digest": stmt.excluded.digest,
                "media_type": stmt.excluded.media_type,
                "size": stmt.excluded.size,
                "pushed_at": stmt.excluded.pushed_at,
                "pushed_by": stmt.excluded.pushed_by,
                "platforms": None,  # read again from the registry (store.registry.details)
            },
        )
        session.execute(stmt)
    session.flush()
    return repo


INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
PAIR_WINDOW = timedelta(seconds=60)  # an index and its platform manifest, one pull
KEEP_PULLS = timedelta(hours=1)


def client_key(address: str, user_agent: str) -> str:
    """Who downloaded: the client's address (without the port: a client may open a new
    connection for the second manifest) and user agent, hashed."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    if host.startswith("[") and "]" in host:
        host = host[1 : host.index("]")]
    return hashlib.sha256(f"{host}\n{user_agent}".encode()).hexdigest()


def record_pull(
    session: Session,
    *,
    name: str,
    at: datetime,
    media_type: str = "",
    client: str | None = None,
) -> bool:
    """One manifest download: the repository's total and the day's counter, both atomic.

    An image index and a platform manifest downloaded by the same ``client`` within
    PAIR_WINDOW of each other (in either order: notifications may arrive out of order) are
    one multi-arch pull and count once. Returns whether this download was counted."""
    repo = ensure_repository(session, name)
    if client is not None and _pairs_up(session, repo.id, client, media_type, at):
        return False
    session.execute(
        update(HubRepository)
        .where(HubRepository.id == repo.id)
        .values(pull_count=HubRepository.pull_count + 1, last_pulled_at=at)
    )
    stmt = _insert(session, PullCounter).values(repository_id=repo.id, day=at.date(), count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["repository_id", "day"], set_={"count": PullCounter.count + 1}
    )
    session.execute(stmt)
    session.flush()
    return True


def _pairs_up(
    session: Session, repository_id: uuid.UUID, client: str, media_type: str, at: datetime
) -> bool:
    """Record this download; True if it completes a counted download of the other kind
    (index vs platform manifest) by the same client, which is then taken (paired)."""
    is_index = media_type in INDEX_MEDIA_TYPES
    session.execute(
        delete(ManifestPull).where(
            ManifestPull.repository_id == repository_id, ManifestPull.at < at - KEEP_PULLS
        )
    )
    candidates = session.scalars(
        select(ManifestPull.id)
        .where(
            ManifestPull.repository_id == repository_id,
            ManifestPull.client == client,
            ManifestPull.is_index.is_(not is_index),
            ManifestPull.paired.is_(False),
            ManifestPull.at >= at - PAIR_WINDOW,
            ManifestPull.at <= at + PAIR_WINDOW,
        )
        .order_by(ManifestPull.at)
    ).all()
    paired = False
    for candidate in candidates:
        # Two processes may see the same candidate: the conditional update decides.
        taken = session.execute(
            update(ManifestPull)
            .where(ManifestPull.id == candidate, ManifestPull.paired.is_(False))
            .values(paired=True)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            paired = True
            break
    session.add(
        ManifestPull(
            repository_id=repository_id, client=client, is_index=is_index, paired=paired, at=at
        )
    )
    session.flush()
    return paired


def record_delete(session: Session, *, name: str, tag: str | None, digest: str | None) -> None:
    repo = session.scalar(select(HubRepository).where(HubRepository.name == name))
    if repo is None:
        return
    stmt = delete(HubTag).where(HubTag.repository_id == repo.id)
    if tag:
        session.execute(stmt.where(HubTag.name == tag))
    elif digest:
        session.execute(stmt.where(HubTag.digest == digest))
    session.flush()


def get_repository(session: Session, name: str) -> HubRepository | None:
    return session.scalar(select(HubRepository).where(HubRepository.name == name))


@dataclass(frozen=True)
class PullHistory:
    repository: str
    total: int
    days: list[tuple[date, int]]


def pull_history(session: Session, *, name: str, days: int = 30) -> PullHistory:
    """Daily manifest pulls over the last ``days`` days (zeros included), and the total."""
    repo = get_repository(session, name)
    today = utcnow().date()
    start = today - timedelta(days=days - 1)
    counts: dict[date, int] = {}
    if repo is not None:
        rows = session.execute(
            select(PullCounter.day, PullCounter.count).where(
                PullCounter.repository_id == repo.id, PullCounter.day >= start
            )
        )
        counts = {day: count for day, count in rows}
    series = [
        (start + timedelta(days=i), counts.get(start + timedelta(days=i), 0)) for i in range(days)
    ]
    return PullHistory(name, repo.pull_count if repo else 0, series)


def total_pulls(session: Session, repository_id: uuid.UUID) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(PullCounter.count), 0)).where(
                PullCounter.repository_id == repository_id
            )
        )
        or 0
    )


def pick_install_tag(tags_newest_first: list[str]) -> str | None:
    """The tag an install command names: ``latest`` when pushed, else the most recently
    pushed tag; None when nothing is pushed (the store shows "Not yet available" then,
    never a command that cannot work)."""
    if "latest" in tags_newest_first:
        return "latest"
    return tags_newest_first[0] if tags_newest_first else None


def install_tags(session: Session, repositories: list[str]) -> dict[str, str]:
    """:func:`pick_install_tag` for each of these repositories that has a tag, in one
    query (pages listing several products)."""
    names = sorted(set(repositories))
    if not names:
        return {}
    rows = session.execute(
        select(HubRepository.name, HubTag.name)
        .join(HubTag, HubTag.repository_id == HubRepository.id)
        .where(HubRepository.name.in_(names))
        .order_by(HubRepository.name, HubTag.pushed_at.desc(), HubTag.name)
    )
    found: dict[str, list[str]] = {}
    for repository, tag in rows:
        found.setdefault(repository, []).append(tag)
    chosen = {name: pick_install_tag(tags) for name, tags in found.items()}
    return {name: tag for name, tag in chosen.items() if tag is not None}
