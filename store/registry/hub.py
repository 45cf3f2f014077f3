"""The hub's records of what the registry holds: repositories, tags, pull counts.

Writes that several store processes may make at once (a new repository, a tag, a day's
counter) are single upserts (``INSERT … ON CONFLICT``) on SQLite and PostgreSQL, so
concurrent events never trip over a unique constraint.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Table,
    bindparam,
    delete,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.accounts.models import Namespace
from store.catalog.events import AccessChanged, CatalogEvent
from store.catalog.models import Product
from store.db import new_id, utcnow
from store.errors import Conflict, ValidationFailed
from store.registry import grants
from store.registry.models import HubRepository, HubTag, ManifestPull, PullCounter, names_under

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
        product_paid=product.is_sold if product is not None else False,
        marked_public=visibility == "public",
    )


def is_private(name: str, product: Product | None, visibility: str) -> bool:
    """Private = the rule does not let anyone pull it (search shows it only to those who
    may: :mod:`store.search.documents`)."""
    return not anonymous_facts(name, product, visibility).public


def ensure_repository(session: Session, name: str) -> HubRepository:
    """The hub record of a repository, created if new (with its namespace's default
    visibility, except a product's repositories: private, their tiers decide who pulls);
    its visibility recomputed."""
    namespace = name.partition("/")[0] if "/" in name else ""
    product = product_of(session, name)
    # A namespace made public by default for its plain repositories does not give a paid
    # product's images away at their first push.
    default: Any = (
        "private"
        if product is not None
        else func.coalesce(
            select(Namespace.default_visibility)
            .where(Namespace.name == namespace)
            .scalar_subquery(),
            "private",
        )
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
    private = is_private(name, product, repo.visibility)
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
    under = names_under(name, session.get_bind().dialect.name)
    repos = session.scalars(select(HubRepository).where((HubRepository.name == name) | under))
    for repo in repos:
        repo.private = is_private(repo.name, product, repo.visibility)
    session.flush()


def follow_catalog(session: Session, event: CatalogEvent) -> None:
    """A catalog edit changed who may pull from a product's repository: recompute it, in the
    edit's transaction (store.catalog.events)."""
    if isinstance(event, AccessChanged):
        refresh_visibility(session, event.repository)


def check_mark(session: Session, *, name: str, visibility: str) -> None:
    """Refuse marking public a repository of a product sold through a paid tier: the mark
    would not open it (:attr:`store.registry.grants.RepoFacts.public`), so setting it is
    refused rather than kept without effect. Marks set before the product or its paid tier
    existed stay, without effect while it is sold."""
    if visibility != "public":
        return
    product = product_of(session, name)
    if product is not None and product.is_sold:
        raise Conflict(
            f"{name} belongs to {product.repository}, which is sold through a paid tier: its "
            f"tiers decide who pulls it, and it cannot be marked public. To give its images "
            f"away, make every active tier free and public",
            code="sold_product",
            field="visibility",
        )


def mark_note(name: str, product: Product | None, visibility: str) -> str:
    """What the public mark does for a repository, when it does not do what it says."""
    if visibility != "public" or product is None:
        return ""
    if product.status == "suspended":
        return f"{product.repository} is suspended: nobody outside its publisher pulls {name}."
    if product.is_sold:
        return (
            f"{product.repository} is sold through a paid tier: the public mark does not open "
            f"{name}; its tiers decide who pulls it."
        )
    return ""


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
    """One manifest download, counted (:func:`count_pull`) and in search at once. Returns
    whether this download was counted."""
    repository_id, counted = count_pull(
        session, name=name, at=at, media_type=media_type, client=client
    )
    for obj in list(session.identity_map.values()):
        if isinstance(obj, HubRepository) and obj.id == repository_id:
            session.expire(obj, ["pull_count", "last_pulled_at"])
    refresh_search(session, [repository_id])
    return counted


_hub = cast(Table, HubRepository.__table__)
_pulls = cast(Table, ManifestPull.__table__)
_counters = cast(Table, PullCounter.__table__)


def count_pull(
    session: Session,
    *,
    name: str,
    at: datetime,
    media_type: str = "",
    client: str | None = None,
    repository_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, bool]:
    """One manifest download: the repository's total and the day's counter, both atomic.

    Plain statements on the session's connection (a pull notification is the store's most
    frequent write): the repository looked up, the multi-arch pairing (one conditional
    UPDATE and one INSERT), the total's UPDATE and the day's upsert; on PostgreSQL the
    pairing lock and then those four in one statement. Each statement is built once
    (:class:`PullStatements`) and executed with its parameters: building and compiling
    them anew for every pull cost several times what the database does. The
    search documents are **not** rewritten here: the caller refreshes them
    (:func:`refresh_search`, at once or batched, :mod:`store.registry.pull_search`).

    An image index and a platform manifest downloaded by the same ``client`` within
    PAIR_WINDOW of each other (in either order: notifications may arrive out of order) are
    one multi-arch pull and count once. ``repository_id``: the repository's, when the
    caller has it (the notification reads it with the event's record). Returns the
    repository's id and whether this download was counted."""
    conn = session.connection()
    sql = PullStatements.of(conn)
    if repository_id is None:
        repository_id = conn.scalar(sql.repository_id, {"p_name": name})
    if repository_id is None:  # its first event: created (and indexed) as any new one
        repository_id = ensure_repository(session, name).id
        session.flush()
    if client is not None and conn.dialect.name == "postgresql":
        return repository_id, _count_on_postgresql(conn, sql, repository_id, client, media_type, at)
    if client is not None and _pairs_up(conn, sql, repository_id, client, media_type, at):
        return repository_id, False
    conn.execute(sql.total, {"p_repository": repository_id, "p_at": at})
    conn.execute(sql.day, {"p_repository": repository_id, "p_day": at.date()})
    return repository_id, True


class PullStatements:
    """The statements of :func:`count_pull`, built once per dialect (module state: they
    hold no connection and no values, only bound parameters). The pairing rule, the total
    and the day's counter are written once: SQLite runs them one by one, PostgreSQL as
    one statement composed of the same pieces (``pair_and_count``)."""

    _built: dict[str, PullStatements] = {}

    def __init__(self, dialect: str) -> None:
        module = postgresql if dialect == "postgresql" else sqlite
        at_type = _pulls.c.at.type
        repository = bindparam("p_repository", type_=_pulls.c.repository_id.type)
        at = bindparam("p_at", type_=at_type)
        client = bindparam("p_client", type_=_pulls.c.client.type)
        self.repository_id = select(_hub.c.id).where(_hub.c.name == bindparam("p_name"))
        # The total and the day's counter: what a counted download adds.
        self.total = (
            update(_hub)
            .where(_hub.c.id == repository)
            .values(pull_count=_hub.c.pull_count + 1, last_pulled_at=at)
        )
        day = bindparam("p_day", type_=_counters.c.day.type)
        self.day = self._day(
            module.insert(_counters).values(repository_id=repository, day=day, count=1)
        )
        self.expire = delete(_pulls).where(
            _pulls.c.repository_id == repository,
            _pulls.c.at < bindparam("p_before", type_=at_type),
        )
        self.lock = select(func.pg_advisory_xact_lock(bindparam("p_key", type_=BigInteger)))
        # The pairing rule: the oldest unpaired download of the other kind by the same
        # client within the window, taken by one conditional UPDATE; the download is then
        # recorded, paired or not.
        candidate = (
            select(_pulls.c.id)
            .where(
                _pulls.c.repository_id == repository,
                _pulls.c.client == client,
                _pulls.c.is_index == bindparam("p_other_kind", type_=Boolean),
                _pulls.c.paired.is_(False),
                _pulls.c.at >= bindparam("p_since", type_=at_type),
                _pulls.c.at <= bindparam("p_until", type_=at_type),
            )
            .order_by(_pulls.c.at)
            .limit(1)
            .scalar_subquery()
        )
        self.pair = (
            update(_pulls)
            .where(_pulls.c.id == candidate, _pulls.c.paired.is_(False))
            .values(paired=True)
        )
        download = {
            "id": bindparam("p_id", type_=_pulls.c.id.type),
            "repository_id": repository,
            "client": client,
            "is_index": bindparam("p_is_index", type_=Boolean),
        }
        self.download = _pulls.insert().values(
            **download, paired=bindparam("p_paired", type_=Boolean), at=at
        )
        if dialect != "postgresql":
            return
        # PostgreSQL: the same four statements in one (data-modifying CTEs), after the
        # pairing lock: one round trip instead of four. Counted unless the pairing took one.
        taken = self.pair.returning(_pulls.c.id).cte("taken")
        paired = select(taken.c.id).exists()
        counted = ~paired
        recorded = _pulls.insert().from_select(
            [*download, "paired", "at"], select(*download.values(), paired, at)
        )
        counter = module.insert(_counters).from_select(
            ["repository_id", "day", "count"], select(repository, day, literal(1)).where(counted)
        )
        self.pair_and_count = select(counted).add_cte(
            recorded.cte("download"),
            self.total.where(counted).cte("total"),
            self._day(counter).cte("day"),
        )

    @staticmethod
    def _day(insert: sqlite.Insert | postgresql.Insert) -> sqlite.Insert | postgresql.Insert:
        return insert.on_conflict_do_update(
            index_elements=["repository_id", "day"], set_={"count": _counters.c.count + 1}
        )

    @classmethod
    def of(cls, conn: Connection) -> PullStatements:
        dialect = conn.dialect.name
        built = cls._built.get(dialect)
        if built is None:
            built = cls._built[dialect] = cls(dialect)
        return built


def refresh_search(session: Session, repository_ids: Iterable[uuid.UUID]) -> None:
    """Bring the search documents of these repositories (and their listings) in step with
    their pull counts after :func:`count_pull` (only the pull columns are written), with
    the transaction's other documents, before it commits."""
    from store.search import indexer

    indexer.later(session, indexer.Changes(pulls=set(repository_ids)))


_EXPIRY_EVERY = 60.0  # seconds between deletions of a repository's old downloads, per process
_expired_at: dict[uuid.UUID, float] = {}


def _expire_downloads(
    conn: Connection, sql: PullStatements, repository_id: uuid.UUID, at: datetime
) -> None:
    """Forget a repository's downloads older than KEEP_PULLS, at most once a minute per
    process (they are outside every pairing window anyway: only the table's size is at
    stake)."""
    now = time.monotonic()
    last = _expired_at.get(repository_id)
    if last is not None and now - last < _EXPIRY_EVERY:
        return
    if len(_expired_at) > 10_000:
        _expired_at.clear()
    _expired_at[repository_id] = now
    conn.execute(sql.expire, {"p_repository": repository_id, "p_before": at - KEEP_PULLS})


def _lock_key(repository_id: uuid.UUID, client: str) -> int:
    digest = hashlib.blake2b(repository_id.bytes + client.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _count_on_postgresql(
    conn: Connection,
    sql: PullStatements,
    repository_id: uuid.UUID,
    client: str,
    media_type: str,
    at: datetime,
) -> bool:
    """:func:`_pairs_up` and, unless the download paired up, the total and the day's
    counter, in one statement after the pairing lock; whether the download was counted.

    The index and the manifest of one pull may reach two processes at once (two hosts, two
    registry replicas): each would miss the other's uncommitted row and both would count.
    One client's downloads of one repository are paired one transaction at a time (the
    advisory lock, held to the commit); the statement after it sees what the previous
    holder committed (READ COMMITTED: a snapshot per statement)."""
    is_index = media_type in INDEX_MEDIA_TYPES
    _expire_downloads(conn, sql, repository_id, at)
    conn.execute(sql.lock, {"p_key": _lock_key(repository_id, client)})
    counted = conn.scalar(
        sql.pair_and_count,
        {
            "p_id": new_id(),
            "p_repository": repository_id,
            "p_client": client,
            "p_is_index": is_index,
            "p_other_kind": not is_index,
            "p_at": at,
            "p_since": at - PAIR_WINDOW,
            "p_until": at + PAIR_WINDOW,
            "p_day": at.date(),
        },
    )
    return bool(counted)


def _pairs_up(
    conn: Connection,
    sql: PullStatements,
    repository_id: uuid.UUID,
    client: str,
    media_type: str,
    at: datetime,
) -> bool:
    """Record this download; True if it completes a counted download of the other kind
    (index vs platform manifest) by the same client, which is then taken (paired). SQLite:
    one writer at a time, so two processes never pair one download twice."""
    is_index = media_type in INDEX_MEDIA_TYPES
    _expire_downloads(conn, sql, repository_id, at)
    taken = conn.execute(
        sql.pair,
        {
            "p_repository": repository_id,
            "p_client": client,
            "p_other_kind": not is_index,
            "p_since": at - PAIR_WINDOW,
            "p_until": at + PAIR_WINDOW,
        },
    )
    paired = taken.rowcount == 1
    conn.execute(
        sql.download,
        {
            "p_id": new_id(),
            "p_repository": repository_id,
            "p_client": client,
            "p_is_index": is_index,
            "p_paired": paired,
            "p_at": at,
        },
    )
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
