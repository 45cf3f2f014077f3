"""Turning products and hub repositories into search documents (plain dicts of columns).

Reads go through Core on the flushing connection, never the ORM, so building documents
inside a flush event cannot trigger lazy loads or another flush.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from store.accounts.models import Organization
from store.catalog.models import Product, Tier, product_categories
from store.catalog.periods import BillingKind
from store.db import make_engine, read_only_connection
from store.registry import grants
from store.registry.grants import product_repository
from store.registry.models import HubRepository, PullCounter
from store.search import facets
from store.search.query import TextJob, fold, index_texts

BODY_TOKENS = 800
POPULARITY_HALF_LIFE_DAYS = 180.0
POPULARITY_MAX = 1023
_HASH_BITS = 50
_HASH_MASK = (1 << _HASH_BITS) - 1
_STATIC_MAX = (1 << 13) - 1

products_t = Product.__table__
orgs_t = Organization.__table__
tiers_t = Tier.__table__
hub_t = HubRepository.__table__
pulls_t = PullCounter.__table__
RECENT_PULL_DAYS = 30

Doc = dict[str, Any]
# Builds the indexed text of many fields at once (store.search.query.index_texts, or the
# same spread over worker processes by a full reindex).
TextIndexer = Callable[[Sequence[TextJob]], list[str]]
_FTS_FIELDS = ("fts_name", "fts_title", "fts_summary", "fts_body")


STAR_WEIGHT = 10  # a star counts as much as this many pulls


def popularity(pulls: int, last_active: datetime | None, now: datetime, stars: int = 0) -> int:
    """log2 of the pull count (each star counting as STAR_WEIGHT pulls), halved for every
    180 days without a push or pull; 0..1023."""
    pulls = max(0, pulls) + STAR_WEIGHT * max(0, stars)
    if pulls <= 0:
        return 0
    age_days = 0.0
    if last_active is not None:
        if last_active.tzinfo is None:
            last_active = last_active.replace(tzinfo=UTC)
        age_days = max(0.0, (now - last_active).total_seconds() / 86400)
    decayed = pulls * 0.5 ** (age_days / POPULARITY_HALF_LIFE_DAYS)
    return min(POPULARITY_MAX, int(math.log2(1 + decayed) * 32))


def rank_key(doc: Doc) -> int:
    """Ascending = better: badges (official > certified > verified), then popularity.

    The low 50 bits come from the document's stable id, so ties are broken the same way on
    every page and every backend.
    """
    badge_class = 4 * doc["official"] + 2 * doc["certified"] + doc["verified"]
    static = (badge_class << 10) | doc["popularity"]
    return ((_STATIC_MAX - static) << _HASH_BITS) | (doc["ref_id"].int >> 78 & _HASH_MASK)


def _name_key(name: str) -> str:
    return fold(name.rsplit("/", 1)[-1])


def _fill_texts(docs: list[Doc], jobs: list[TextJob], texts: TextIndexer) -> list[Doc]:
    """Set each document's fts_* fields from its four jobs (name, title, summary, body)."""
    indexed = texts(jobs)
    width = len(_FTS_FIELDS)
    for i, doc in enumerate(docs):
        doc.update(zip(_FTS_FIELDS, indexed[i * width : (i + 1) * width], strict=True))
    return docs


def _latest(*values: datetime | None) -> datetime | None:
    present = [v if v.tzinfo else v.replace(tzinfo=UTC) for v in values if v is not None]
    return max(present) if present else None


def _recent_pulls(conn: Connection, repo_ids: list[uuid.UUID], now: datetime) -> dict[Any, int]:
    """Manifest pulls of the last 30 days (today included) by repository id."""
    if not repo_ids:
        return {}
    since = (now - timedelta(days=RECENT_PULL_DAYS - 1)).date()
    rows = conn.execute(
        select(pulls_t.c.repository_id, func.sum(pulls_t.c.count))
        .where(pulls_t.c.repository_id.in_(repo_ids), pulls_t.c.day >= since)
        .group_by(pulls_t.c.repository_id)
    )
    return {repo_id: int(total or 0) for repo_id, total in rows}


def pull_columns(
    *,
    pulls: int,
    stars: int,
    recent: int,
    last_pushed_at: datetime | None,
    last_pulled_at: datetime | None,
    created_at: datetime | None,
    now: datetime,
) -> Doc:
    """The columns of a document that follow its repository's pulls: a listing's and its
    repository's documents alike (both rank by the repository's pulls, stars and last
    activity). ``recent``: its pulls of the last RECENT_PULL_DAYS days."""
    last = _latest(last_pushed_at, last_pulled_at, created_at)
    return {
        "pull_count": pulls,
        "star_count": stars,
        "popularity": popularity(pulls, last, now, stars),
        "pulls_30d": recent,
    }


def _pricing(tiers: list[Any]) -> tuple[list[str], int | None, int | None, str]:
    active = [t for t in tiers if t.active]
    pricing = []
    if any(t.billing == BillingKind.FREE for t in active):
        pricing.append("free")
    paid = [t for t in active if t.billing != BillingKind.FREE]
    if paid:
        pricing.append("paid")
    if any(t.trial_days > 0 for t in active):
        pricing.append("trial")
    if not active:
        return pricing, None, None, ""
    currency = paid[0].currency if paid else ""
    amounts = [t.amount_minor for t in paid if t.currency == currency]
    if any(t.billing == BillingKind.FREE for t in active):
        amounts.append(0)
    return pricing, min(amounts), max(amounts), currency


def _facet_text(doc: Doc, visibility: list[str]) -> str:
    toks = [facets.ALL, *visibility, facets.token("source", doc["source"])]
    toks.append(facets.token("kind", doc["kind"]))
    toks += [facets.token("category", c) for c in doc["categories"]]
    toks += [facets.token("pricing", p) for p in doc["pricing"]]
    badges = [b for b in ("official", "certified", "verified") if doc[b]]
    toks += [facets.token("badge", b) for b in badges or ["community"]]
    if doc["publisher"]:
        toks.append(facets.token("publisher", doc["publisher"]))
    toks += [facets.token("platform", p) for p in doc["platforms"]]
    return " ".join(toks)


def _finish(doc: Doc, visibility: list[str], now: datetime) -> Doc:
    doc["fts_facets"] = _facet_text(doc, visibility)
    doc["id"] = rank_key(doc)
    doc["indexed_at"] = now
    return doc


def product_documents(
    conn: Connection,
    product_ids: Iterable[uuid.UUID] | None = None,
    *,
    now: datetime,
    texts: TextIndexer = index_texts,
) -> list[Doc]:
    """Documents of the given products (all when None); a missing product yields none."""
    stmt = select(
        products_t,
        orgs_t.c.slug.label("org_slug"),
        orgs_t.c.name.label("org_name"),
        orgs_t.c.verified_at,
    )
    stmt = stmt.join(orgs_t, orgs_t.c.id == products_t.c.organization_id)
    ids = list(product_ids) if product_ids is not None else None
    if ids is not None:
        if not ids:
            return []
        stmt = stmt.where(products_t.c.id.in_(ids))
    rows = conn.execute(stmt).all()
    if not rows:
        return []
    row_ids = [r.id for r in rows]
    tiers: dict[uuid.UUID, list[Any]] = defaultdict(list)
    cats: dict[uuid.UUID, list[str]] = defaultdict(list)
    for tier in conn.execute(select(tiers_t).where(tiers_t.c.product_id.in_(row_ids))):
        tiers[tier.product_id].append(tier)
    pc = product_categories.c
    for pid, slug in conn.execute(
        select(pc.product_id, pc.category_slug)
        .where(pc.product_id.in_(row_ids))
        .order_by(pc.category_slug)
    ):
        cats[pid].append(slug)
    hub = {
        r.name: r
        for r in conn.execute(
            select(hub_t.c.id, hub_t.c.name, hub_t.c.pull_count, hub_t.c.star_count)
            .add_columns(hub_t.c.last_pushed_at, hub_t.c.last_pulled_at, hub_t.c.created_at)
            .where(hub_t.c.name.in_([r.repository for r in rows]))
        )
    }
    recent = _recent_pulls(conn, [h.id for h in hub.values()], now)
    docs: list[Doc] = []
    jobs: list[TextJob] = []
    for r in rows:
        repo = hub.get(r.repository)
        pricing, low, high, currency = _pricing(tiers[r.id])
        doc: Doc = {
            "source": "store",
            "ref_id": r.id,
            "name": r.repository,
            "name_key": _name_key(r.repository),
            "namespace": r.org_slug,
            "owner_id": r.organization_id,
            "title": r.title,
            "summary": r.summary,
            "kind": r.kind,
            "status": r.status,
            "publisher": r.org_slug,
            "publisher_name": r.org_name,
            "official": bool(r.official),
            "certified": r.certified_at is not None,
            "verified": r.verified_at is not None,
            "pricing": pricing,
            "price_min": low,
            "price_max": high,
            "currency": currency,
            "categories": cats[r.id],
            "platforms": list(r.platforms or []),
            **pull_columns(
                pulls=repo.pull_count if repo else 0,
                stars=repo.star_count if repo else 0,
                recent=recent.get(repo.id, 0) if repo else 0,
                last_pushed_at=repo.last_pushed_at if repo else None,
                last_pulled_at=repo.last_pulled_at if repo else None,
                created_at=repo.created_at if repo else None,
                now=now,
            ),
            "updated_at": _latest(r.updated_at, repo.last_pushed_at if repo else None),
            **dict.fromkeys(_FTS_FIELDS, ""),
        }
        jobs += [
            (r.repository, None),
            (r.title, None),
            (r.summary, None),
            (r.description_md[:20_000], BODY_TOKENS),
        ]
        visible = (
            []
            if r.status == "published"
            else [facets.RESTRICTED, facets.visibility_token(r.org_slug)]
        )
        docs.append(_finish(doc, visible, now))
    return _fill_texts(docs, jobs, texts)


def hub_documents(
    conn: Connection,
    repo_ids: Iterable[uuid.UUID] | None = None,
    *,
    now: datetime,
    names: Iterable[str] | None = None,
    texts: TextIndexer = index_texts,
) -> list[Doc]:
    """Documents of the given hub repositories (by id or name; all when both are None)."""
    stmt = select(hub_t)
    if repo_ids is not None or names is not None:
        ids, nms = list(repo_ids or ()), list(names or ())
        if not ids and not nms:
            return []
        stmt = stmt.where(hub_t.c.id.in_(ids) | hub_t.c.name.in_(nms))
    rows = conn.execute(stmt).all()
    if not rows:
        return []
    namespaces = {r.namespace for r in rows}
    orgs = {
        o.slug: o
        for o in conn.execute(
            select(orgs_t.c.slug, orgs_t.c.name, orgs_t.c.verified_at).where(
                orgs_t.c.slug.in_(namespaces)
            )
        )
    }
    products = _owning_products(conn, {product_repository(r.name) for r in rows})
    recent = _recent_pulls(conn, [r.id for r in rows], now)
    docs: list[Doc] = []
    jobs: list[TextJob] = []
    for r in rows:
        org = orgs.get(r.namespace)
        description = r.description or ""
        summary = description.strip().split("\n", 1)[0][:300]
        doc: Doc = {
            "source": "hub",
            "ref_id": r.id,
            "name": r.name,
            "name_key": _name_key(r.name),
            "namespace": r.namespace,
            "owner_id": None,
            "title": "",
            "summary": summary,
            "kind": "image",
            "status": "private" if r.private else "public",
            "publisher": r.namespace,
            "publisher_name": org.name if org else r.namespace,
            "official": False,
            "certified": False,
            "verified": bool(org and org.verified_at is not None),
            "pricing": [],
            "price_min": None,
            "price_max": None,
            "currency": "",
            "categories": [],
            "platforms": [],
            **pull_columns(
                pulls=r.pull_count,
                stars=r.star_count,
                recent=recent.get(r.id, 0),
                last_pushed_at=r.last_pushed_at,
                last_pulled_at=r.last_pulled_at,
                created_at=r.created_at,
                now=now,
            ),
            "updated_at": _latest(r.last_pushed_at, r.created_at),
            **dict.fromkeys(_FTS_FIELDS, ""),
        }
        jobs += [
            (r.name, None),
            ("", None),
            (summary, None),
            (f"{description}\n{r.readme_md or ''}"[:20_000], BODY_TOKENS),
        ]
        docs.append(_finish(doc, _hub_visibility(r, products.get(product_repository(r.name))), now))
    return _fill_texts(docs, jobs, texts)


def _owning_products(conn: Connection, repositories: set[str]) -> dict[str, grants.RepoFacts]:
    """Facts (as anyone sees them) of the products owning these repositories, by repository."""
    repositories.discard("")
    if not repositories:
        return {}
    rows = conn.execute(
        select(products_t.c.id, products_t.c.repository, products_t.c.status).where(
            products_t.c.repository.in_(repositories)
        )
    ).all()
    tiers: dict[uuid.UUID, list[Any]] = defaultdict(list)
    if rows:
        for tier in conn.execute(
            select(tiers_t.c.product_id, tiers_t.c.billing, tiers_t.c.public).where(
                tiers_t.c.product_id.in_([r.id for r in rows]), tiers_t.c.active
            )
        ):
            tiers[tier.product_id].append(tier)
    return {
        r.repository: grants.RepoFacts(
            name=r.repository,
            product_id=r.id,
            product_status=r.status,
            product_public=bool(tiers[r.id])
            and all(t.billing == BillingKind.FREE and t.public for t in tiers[r.id]),
            product_paid=any(t.billing != BillingKind.FREE for t in tiers[r.id]),
        )
        for r in rows
    }


def _hub_visibility(repo: Any, product: grants.RepoFacts | None) -> list[str]:
    """Who sees a hub repository: those the "may pull" rule (store.registry.grants) lets
    pull it. Public: everyone (no token). A listed product's own repository: nobody (its
    listing stands for it). Otherwise the namespace's members (``v:<namespace>``),
    administrators, the repository's collaborators (``vr:<repository>``) and, for a product's
    repositories (unless suspended), holders of a usable entitlement (``v:p<product>``,
    :func:`store.search.facets.product_token`)."""
    facts = grants.RepoFacts(
        name=repo.name,
        product_id=product.product_id if product else None,
        product_status=product.product_status if product else None,
        product_public=product.product_public if product else False,
        product_paid=product.product_paid if product else False,
        marked_public=repo.visibility == "public",
    )
    if product is not None and facts.listed and repo.name == product.name:
        return [facets.RESTRICTED, facets.HIDDEN]
    if facts.public:
        return []
    visible = [
        facets.RESTRICTED,
        facets.visibility_token(repo.namespace),
        facets.repository_token(repo.id),
    ]
    if facts.entitles and facts.product_id is not None:
        visible.append(facets.product_token(facts.product_id))
    return visible


# --- documents built in a reindex's worker processes --------------------------------------

_readers: dict[str, Engine] = {}


def read_documents(url: str, source: str, now: datetime, ids: Sequence[uuid.UUID]) -> list[Doc]:
    """The documents of these products (``source`` "store") or hub repositories ("hub"),
    read on a read-only connection of this process's own to the database at ``url``: a
    full reindex's worker processes read and build documents beside the reindexing
    transaction, which only writes them (so they see only what is committed)."""
    engine = _readers.get(url)
    if engine is None:
        engine = _readers[url] = make_engine(url)
    build = product_documents if source == "store" else hub_documents
    with read_only_connection(engine) as conn:
        return build(conn, ids, now=now)
