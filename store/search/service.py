"""One search over store listings and hub repositories.

Ranking, best first (docs/search.md):
1. exact name: the query is a repository name ("redis" names library/redis, acme/redis);
2. badges: official, then certified, then verified publisher;
3. field relevance: all words in the name, else name+title, else +summary, else anywhere;
4. popularity: log-scaled pull count, decayed by inactivity; then a stable tie-break.

Badges and popularity are static (folded into each document's rank key), so each field tier
is one "walk the matches in rank-key order, stop after N" query; merging the tiers gives the
exact top N under the full ordering (proof in docs/search.md).
"""

from __future__ import annotations

import heapq
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, bindparam, or_, select, text
from sqlalchemy.orm import Session, defer

from store.accounts.models import Account, Membership, Organization
from store.db import utcnow
from store.licensing.models import Entitlement
from store.licensing.usable import usable_clause
from store.observability import metrics
from store.registry.models import RepositoryCollaborator
from store.search import facets, indexer
from store.search.backend import Criteria, Scope, backend_for
from store.search.models import SearchDocument
from store.search.query import BadQuery, Query, fold, parse

# Results beyond this rank are not served, and totals and facet counts are exact up to this
# many matches (above, they describe the best-ranked MAX_WINDOW matches and are flagged).
# Reading the facet tokens of these matches is the largest fixed cost of a search
# (docs/performance.md). 500 = 20 pages of 25; `docker search` asks for at most 100.
MAX_WINDOW = 500
MAX_PER_PAGE = 100
PUBLISHER_FACET_SIZE = 20
_HASH_BITS = 50
_STATIC_MAX = (1 << 13) - 1

FILTER_VALUES = {
    "source": ("store", "hub"),
    "kind": ("image", "plugin"),
    "pricing": ("free", "paid", "trial"),
    "badge": ("official", "certified", "verified", "community"),
}


# Sort orders: relevance is the ranking above; the others order the matches (the best
# MAX_WINDOW of them by relevance when there are more) by one column, ties by relevance.
SORTS = {
    "relevance": "Relevance",
    "pulls": "Most pulled (30 days)",
    "stars": "Most starred",
    "updated": "Recently updated",
    "price": "Lowest price",
    "title": "Title",
}
# Names other pages used for the same orders.
_SORT_ALIASES = {"featured": "relevance", "newest": "updated", "popular": "pulls"}


def resolve_sort(raw: str | None) -> tuple[str, str | None]:
    """The sort to use and, for a value that names none, a notice saying what was used."""
    value = (raw or "").strip().lower()
    if not value:
        return "relevance", None
    value = _SORT_ALIASES.get(value, value)
    if value in SORTS:
        return value, None
    shown = (raw or "")[:40]
    return "relevance", f"“{shown}” is not a sort order; sorted by relevance instead."


@dataclass(frozen=True)
class Filters:
    source: str | None = None
    kind: str | None = None
    category: str | None = None
    pricing: str | None = None
    badge: str | None = None
    publisher: str | None = None
    platform: str | None = None

    def tokens(self) -> tuple[str, ...]:
        out = []
        for facet in facets.FACETS:
            value = getattr(self, facet)
            if value:
                out.append(facets.token(facet, value))
        return tuple(out)

    def active(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in facets.FACETS if getattr(self, f)}


def make_filters(**values: str | None) -> Filters:
    """Validated filters: unknown fixed values are a 400, free-form ones are normalised."""
    clean: dict[str, str | None] = {}
    for key, raw in values.items():
        value = (raw or "").strip().lower() or None
        if value is not None:
            allowed = FILTER_VALUES.get(key)
            if allowed is not None and value not in allowed:
                raise BadQuery(f"{key} must be one of {', '.join(allowed)}")
            if len(value) > 128:
                raise BadQuery(f"{key} is too long")
        clean[key] = value
    return Filters(**clean)


@dataclass
class Hit:
    doc: SearchDocument
    exact: bool
    tier: int
    entitled: bool | None  # None when anonymous or not a store listing


@dataclass
class FacetValue:
    value: str
    label: str
    count: int
    selected: bool


@dataclass
class SearchResults:
    query: Query
    q: str
    filters: Filters
    hits: list[Hit]
    page: int
    per_page: int
    total: int
    total_exact: bool
    facets: dict[str, list[FacetValue]] = field(default_factory=dict)
    sort: str = "relevance"

    @property
    def pages(self) -> int:
        return max(1, -(-min(self.total, MAX_WINDOW) // self.per_page))


def scope_for(session: Session, account: Account | None) -> Scope:
    if account is None:
        return Scope()
    if account.is_admin:
        return Scope(everything=True)
    slugs = session.scalars(
        select(Organization.slug)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.account_id == account.id)
    )
    shared = session.scalars(
        select(RepositoryCollaborator.repository_id).where(
            RepositoryCollaborator.account_id == account.id
        )
    )
    return Scope(
        namespaces=tuple(sorted({*slugs, account.username})),
        products=tuple(sorted(usable_products(session, account))),
        repositories=tuple(sorted(shared)),
    )


def usable_products(session: Session, account: Account) -> set[uuid.UUID]:
    """Products the account (or one of its organizations) holds a usable entitlement to:
    the same definition as the token endpoint's (store.licensing.usable)."""
    orgs = select(Membership.organization_id).where(Membership.account_id == account.id)
    return set(
        session.scalars(
            select(Entitlement.product_id)
            .where(
                or_(Entitlement.account_id == account.id, Entitlement.organization_id.in_(orgs)),
                usable_clause(Entitlement, utcnow()),
            )
            .distinct()
        )
    )


def badge_class(key: int) -> int:
    return (_STATIC_MAX - (key >> _HASH_BITS)) >> 10


@metrics.timed_search
def search(
    session: Session,
    *,
    q: str,
    filters: Filters | None = None,
    account: Account | None = None,
    page: int = 1,
    per_page: int = 25,
    as_you_type: bool = True,
    sort: str = "relevance",
) -> SearchResults:
    """Search what ``account`` (None: anonymous) may see; BadQuery (400) on unusable input.
    ``sort`` is one of SORTS (resolve_sort turns user input into one)."""
    if sort not in SORTS:
        raise BadQuery(f"sort must be one of {', '.join(SORTS)}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise BadQuery(f"per_page must be between 1 and {MAX_PER_PAGE}")
    if page < 1:
        raise BadQuery("page starts at 1")
    window = page * per_page
    if window > MAX_WINDOW:
        raise BadQuery(f"Only the first {MAX_WINDOW} results can be paged through")
    filters = filters or Filters()
    query = parse(q, as_you_type=as_you_type)
    criteria = Criteria(query, filters.tokens(), scope_for(session, account))
    indexer.write_pending(session)  # a transaction that wrote finds its own changes
    conn = session.connection()
    backend = backend_for(conn)

    with backend.planning(conn):
        rows = backend.facet_rows(conn, criteria, MAX_WINDOW + 1)
        total_exact = len(rows) <= MAX_WINDOW
        rows = rows[:MAX_WINDOW]
        tiers: dict[int, int] = {key: 0 for key, _ in rows[:window]}
        if not query.empty and sort == "relevance":
            for tier, keys in backend.tier_ids(conn, criteria, window).items():
                for key in keys:
                    tiers[key] = max(tiers.get(key, 0), tier)
    exact = _exact_names(session, query, criteria)
    for key in exact:
        tiers.setdefault(key, 3)
    if sort == "relevance":
        order = sorted(tiers, key=lambda k: (k not in exact, -badge_class(k), -tiers[k], k))
    else:
        order = _sorted_by(session, sort, [key for key, _ in rows], exact)
    page_keys = order[(page - 1) * per_page : window]
    docs = {
        d.id: d
        for d in session.scalars(
            select(SearchDocument).where(SearchDocument.id.in_(page_keys)).options(*_NO_INDEX_TEXT)
        )
    }
    entitled = _entitled(session, account, [d for d in docs.values() if d.source == "store"])
    hits = [
        Hit(
            doc=docs[k],
            exact=k in exact,
            tier=tiers.get(k, 0),
            entitled=entitled.get(docs[k].ref_id) if account is not None else None,
        )
        for k in page_keys
        if k in docs
    ]
    return SearchResults(
        query=query,
        q=q,
        filters=filters,
        hits=hits,
        page=page,
        per_page=per_page,
        total=len(rows),
        total_exact=total_exact,
        facets=_facet_counts(session, rows, filters),
        sort=sort,
    )


def _sorted_by(session: Session, sort: str, keys: list[int], exact: set[int]) -> list[int]:
    """The matches ordered by one column (best first), ties by rank key."""
    d = SearchDocument.__table__.c
    keys = list(dict.fromkeys([*exact, *keys]))
    if not keys:
        return []
    rows = session.execute(
        select(d.id, d.pulls_30d, d.star_count, d.updated_at, d.price_min, d.title, d.name).where(
            d.id.in_(keys)
        )
    ).all()
    never = datetime.min.replace(tzinfo=UTC)

    def key(r: Any) -> tuple[Any, ...]:
        if sort == "pulls":
            return (-r.pulls_30d, r.id)
        if sort == "stars":
            return (-r.star_count, r.id)
        if sort == "updated":
            at = r.updated_at or never
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            return (-at.timestamp(), r.id)
        if sort == "price":  # free first, then the lowest price; unpriced last
            return (r.price_min is None, r.price_min or 0, r.id)
        return (fold(r.title or r.name), r.name, r.id)

    return [r.id for r in sorted(rows, key=key)]


# The indexed token text (descriptions included) is not shown: not loaded with the hits.
_NO_INDEX_TEXT = tuple(
    defer(column)
    for column in (
        SearchDocument.fts_name,
        SearchDocument.fts_title,
        SearchDocument.fts_summary,
        SearchDocument.fts_body,
        SearchDocument.fts_facets,
    )
)
_EXACT_SQL = text(
    "SELECT id, fts_facets FROM search_documents WHERE name_key = :name OR name = :name"
)


def _exact_names(session: Session, query: Query, criteria: Criteria) -> set[int]:
    """Rank keys of visible, filter-passing documents named exactly as the query."""
    name = query.exact_name
    if name is None:
        return set()
    rows = session.connection().execute(_EXACT_SQL, {"name": name})
    scope = criteria.scope
    visible = set(scope.tokens)
    found = set()
    for key, tokens in rows:
        toks = set(tokens.split())
        if facets.HIDDEN in toks or not set(criteria.filter_tokens) <= toks:
            continue
        if scope.everything or facets.RESTRICTED not in toks or toks & visible:
            found.add(key)
    return found


def _entitled(
    session: Session, account: Account | None, docs: list[SearchDocument]
) -> dict[uuid.UUID, bool]:
    """Which of these listings the account may use now, in one query."""
    if account is None or not docs:
        return {}
    product_ids = [d.ref_id for d in docs]
    held = usable_products(session, account)
    return {pid: pid in held for pid in product_ids}


def _facet_counts(session: Session, rows: Any, filters: Filters) -> dict[str, list[FacetValue]]:
    tokens = Counter(" ".join([tags for _key, tags in rows]).split())
    grouped: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for tok, n in tokens.items():
        prefix, _, raw = tok.partition(":")
        grouped[prefix].append((raw, n))
    by_facet: dict[str, list[tuple[str, int]]] = {}
    for facet in facets.FACETS:
        # Sorting raw (hex) values sorts the decoded ones, so only the values shown are
        # decoded and labelled (500 matches may name hundreds of publishers).
        values = grouped.get(facets.prefix(facet), [])
        if facet == "publisher":
            raw_values = heapq.nsmallest(PUBLISHER_FACET_SIZE, values, key=_by_count)
        else:
            raw_values = sorted(values, key=_by_count)
        by_facet[facet] = [
            (value, n)
            for raw, n in raw_values
            if (value := facets.decode_value(facet, raw)) is not None
        ]
    names = _labels(session, by_facet)
    out: dict[str, list[FacetValue]] = {}
    for facet, values in by_facet.items():
        chosen = getattr(filters, facet)
        out[facet] = [
            FacetValue(v, names.get((facet, v), _LABELS.get(v, v)), n, v == chosen)
            for v, n in values
        ]
    return out


def _by_count(value: tuple[str, int]) -> tuple[int, str]:
    return -value[1], value[0]


_LABELS = {
    "store": "Store listings",
    "hub": "Hub repositories",
    "image": "Images",
    "plugin": "Plugins",
    "free": "Free",
    "paid": "Paid",
    "trial": "Free trial",
    "official": "Official",
    "certified": "Certified",
    "verified": "Verified publisher",
    "community": "Community",
}


# Display names of the category and publisher values shown, in one statement (compiled
# once: the slugs are expanding parameters).
_LABELS_SQL = text(
    "SELECT 'category', slug, name FROM categories WHERE slug IN :categories "
    "UNION ALL SELECT 'publisher', slug, name FROM organizations WHERE slug IN :publishers"
).bindparams(
    bindparam("categories", type_=String, expanding=True),
    bindparam("publishers", type_=String, expanding=True),
)


def _labels(session: Session, by_facet: dict[str, list[tuple[str, int]]]) -> dict[Any, str]:
    categories = [v for v, _ in by_facet["category"]]
    publishers = [v for v, _ in by_facet["publisher"]]
    if not categories and not publishers:
        return {}
    rows = session.connection().execute(
        _LABELS_SQL, {"categories": categories, "publishers": publishers}
    )
    return {(facet, slug): name for facet, slug, name in rows}


def did_you_mean(
    session: Session, results: SearchResults, account: Account | None = None
) -> str | None:
    """For a search that found nothing: the query with misspelt words replaced by words of
    the index's vocabulary (store.search.spelling), when that query finds something the
    caller may see with its words taken whole: the last word is not a prefix here, so a
    word only a hidden document holds (the vocabulary may be minutes old) is never offered
    because a visible document's word starts with it."""
    if results.total or results.query.empty:
        return None
    from store.search import spelling

    candidate = spelling.did_you_mean(session.connection(), results.q)
    if candidate is None or fold(candidate) == fold(results.q):
        return None
    found = search(
        session,
        q=candidate,
        filters=results.filters,
        account=account,
        per_page=1,
        as_you_type=False,
    )
    return candidate if found.total else None


def suggestions(results: SearchResults) -> list[dict[str, str]]:
    """Other searches to offer when nothing matched (q and filters to link to)."""
    out: list[dict[str, str]] = []
    if results.filters.active():
        out.append({"q": results.q, "label": "Search again without filters"})
    groups = results.query.groups
    if len(groups) > 1:
        words = [" ".join(g[0].tokens) for g in groups]
        out.append({"q": " OR ".join(words), "label": "Match any of the words"})
        out.extend({"q": w, "label": f"Search for “{w}” alone"} for w in words[:3])
    if results.query.excluded:
        kept = " ".join(" ".join(g[0].tokens) for g in groups)
        out.append({"q": kept, "label": "Search without the exclusions"})
    seen: set[str] = set()
    unique = []
    for s in out:
        key = fold(s["q"]) + s["label"]
        if (key not in seen and s["q"] != results.q) or results.filters.active():
            seen.add(key)
            unique.append(s)
    return unique[:5]


@dataclass(frozen=True)
class ListingStats:
    pulls: int
    pulls_30d: int
    updated_at: Any


def listing_stats(session: Session, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, ListingStats]:
    """Pull counts and last update of store listings, from their search documents (one
    query; cards show them)."""
    if not product_ids:
        return {}
    d = SearchDocument.__table__.c
    rows = session.execute(
        select(d.ref_id, d.pull_count, d.pulls_30d, d.updated_at).where(
            d.source == "store", d.ref_id.in_(product_ids)
        )
    )
    return {r.ref_id: ListingStats(r.pull_count, r.pulls_30d, r.updated_at) for r in rows}
