"""Products, tiers and categories: listing, editing, publishing and badges."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from sqlalchemy import Select, Text, and_, cast, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from store import validation
from store.accounts import service as accounts
from store.accounts.models import Account, Membership, Organization
from store.audit import service as audit
from store.catalog import events
from store.catalog.models import Category, Product, Tier, product_categories
from store.catalog.periods import BillingKind
from store.db import lock_row, utcnow
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from store.pagination import Page, paginate

KINDS = ("image", "plugin")
STATUSES = ("draft", "published", "suspended")
BILLINGS = tuple(kind.value for kind in BillingKind)
PRICINGS = ("free", "paid", "trial")
BADGES = ("official", "certified", "verified", "community")  # community: none of the others
_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9]+(?:/[a-z0-9]+)?$")
_CURRENCY = re.compile(r"^[a-z]{3}$")
MAX_AMOUNT_MINOR = 100_000_000  # one million in a two-decimal currency


# --- categories -----------------------------------------------------------------------


def ensure_category(session: Session, slug: str, name: str | None = None) -> Category:
    slug = validation.registry_component(slug.lower(), what="Category", min_len=2, max_len=64)
    category = session.get(Category, slug)
    if category is None:
        try:
            with session.begin_nested():
                category = Category(slug=slug, name=name or slug.replace("-", " ").title())
                session.add(category)
                session.flush()
        except IntegrityError:
            # Made at the same instant by another edit naming it (PostgreSQL): that one.
            category = session.get(Category, slug)
            if category is None:
                raise
    return category


def list_categories(session: Session) -> list[Category]:
    return list(session.scalars(select(Category).order_by(Category.name)))


def category_counts(session: Session) -> list[tuple[Category, int]]:
    rows = session.execute(
        select(Category, func.count(Product.id))
        .join(product_categories, product_categories.c.category_slug == Category.slug)
        .join(Product, Product.id == product_categories.c.product_id)
        .where(Product.status == "published")
        .group_by(Category.slug)
        .order_by(Category.name)
    )
    return [(c, n) for c, n in rows]


# --- products -------------------------------------------------------------------------


def _platforms(values: list[str] | None) -> list[str]:
    cleaned = []
    for value in values or []:
        value = value.strip().lower()
        if not value:
            continue
        if not _PLATFORM.match(value):
            raise ValidationFailed(f"'{value}' is not an OS/architecture such as linux/amd64")
        if value not in cleaned:
            cleaned.append(value)
    return cleaned


def _strings(value: object, *, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise ValidationFailed(f"{what} must be a list")
    return [str(v) for v in value]


def _apply_listing(session: Session, product: Product, data: dict[str, object]) -> None:
    if "title" in data:
        product.title = validation.text(
            str(data["title"] or ""), what="Title", max_len=200, required=True, field="title"
        )
    if "summary" in data:
        product.summary = validation.text(
            str(data["summary"] or ""), what="Summary", max_len=300, field="summary"
        )
    if "description_md" in data:
        product.description_md = validation.text(
            str(data["description_md"] or ""),
            what="Description",
            max_len=100_000,
            field="description_md",
            lines=True,
        )
    for key, label in (
        ("logo_url", "Logo URL"),
        ("docs_url", "Documentation URL"),
        ("support_url", "Support URL"),
        ("eula_url", "EULA URL"),
    ):
        if key in data:
            value = data[key]
            setattr(product, key, validation.optional_url(str(value or ""), what=label, field=key))
    if "platforms" in data:
        product.platforms = _platforms(_strings(data["platforms"], what="Platforms"))
    if "categories" in data:
        slugs = _strings(data["categories"], what="Categories")
        product.categories = [ensure_category(session, s) for s in slugs]


def create_product(
    session: Session,
    *,
    actor: Account,
    org: Organization,
    kind: str,
    slug: str,
    title: str,
    **listing: object,
) -> Product:
    accounts.require_role(session, actor, org, "editor")
    if kind not in KINDS:
        raise ValidationFailed(f"Kind must be one of {', '.join(KINDS)}", field="kind")
    slug = validation.registry_component(
        slug.lower(), what="Repository name", min_len=1, max_len=128, field="slug"
    )
    repository = f"{org.slug}/{slug}"
    if session.scalar(select(Product.id).where(Product.repository == repository)):
        raise Conflict(f"A product for {repository} exists", code="repository_taken", field="slug")
    product = Product(organization=org, kind=kind, slug=slug, repository=repository, title="")
    _apply_listing(session, product, {"title": title, **listing})
    try:
        with session.begin_nested():
            session.add(product)
            session.flush()
    except IntegrityError:
        # Created at the same instant by another request (PostgreSQL; a double click, a
        # retry): refused as a later attempt is.
        raise Conflict(
            f"A product for {repository} exists", code="repository_taken", field="slug"
        ) from None
    return product


def update_product(
    session: Session, *, actor: Account, product: Product, **listing: object
) -> Product:
    accounts.require_role(session, actor, product.organization, "editor")
    unknown = set(listing) - {
        "title",
        "summary",
        "description_md",
        "logo_url",
        "docs_url",
        "support_url",
        "eula_url",
        "platforms",
        "categories",
    }
    if unknown:
        raise ValidationFailed(f"Unknown field {', '.join(sorted(unknown))}")
    # Validation happens while applying: a savepoint keeps a rejected edit from lingering
    # in the session for a caller that catches the error and goes on.
    with session.begin_nested():
        _apply_listing(session, product, listing)
        product.updated_at = utcnow()
    return product


def get_product(session: Session, product_id: uuid.UUID) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("No such product")
    return product


def get_product_by_repository(session: Session, repository: str) -> Product:
    product = session.scalar(
        select(Product).where(Product.repository == repository.strip().lower())
    )
    if product is None:
        raise NotFound(f"No product for {repository}")
    return product


def find_product_by_repository(session: Session, repository: str) -> Product | None:
    return session.scalar(select(Product).where(Product.repository == repository))


def can_view(session: Session, product: Product, account: Account | None) -> bool:
    if product.status == "published":
        return True
    return accounts.has_role(session, account, product.organization, "viewer")


def get_visible_product(session: Session, repository: str, account: Account | None) -> Product:
    product = get_product_by_repository(session, repository)
    if not can_view(session, product, account):
        raise NotFound(f"No product for {repository}")  # drafts do not leak
    return product


def set_status(
    session: Session, *, actor: Account, product: Product, status: str, reason: str = ""
) -> Product:
    """Publish, return to draft, suspend or reinstate a product.

    Publishers move between draft and published; only administrators suspend and reinstate.
    """
    if status not in STATUSES:
        raise ValidationFailed(f"Status must be one of {', '.join(STATUSES)}")
    if status == "suspended" or product.status == "suspended":
        if not actor.is_admin:
            raise Forbidden("Only administrators suspend or reinstate products")
        if status == "suspended" and not reason.strip():
            raise ValidationFailed("Say why the product is suspended")
    else:
        accounts.require_role(session, actor, product.organization, "editor")
    if status == "published":
        if not product.active_tiers:
            raise Conflict("Add at least one active tier before publishing", code="no_tiers")
        if product.status != "published":
            accounts.require_verified_email(actor, "publishing")
        if product.published_at is None:
            product.published_at = utcnow()
    previous = product.status
    product.status = status
    product.status_reason = validation.text(
        reason, what="Reason", max_len=2000, field="reason", lines=True
    )
    session.flush()
    _access_changed(session, product.repository)
    # Subscriptions follow the product's status (store.billing.access).
    events.publish(session, events.StatusChanged(product.id, previous, status))
    audit.record(
        session,
        action=f"product.{status}",
        actor=actor,
        target=product,
        org=product.organization_id,
        details={"repository": product.repository, "reason": product.status_reason},
    )
    return product


def _access_changed(session: Session, repository: str) -> None:
    """Who may pull changes with a product's status and tiers (store.catalog.events)."""
    events.publish(session, events.AccessChanged(repository))


CERTIFY_THROUGH_REVIEW = (
    "Products are certified through the certification review, which ties the badge to a "
    "signed digest (docs/signing.md); only removing the badge is done here"
)


def set_badges(
    session: Session,
    *,
    actor: Account,
    product: Product,
    official: bool | None = None,
    certified: bool | None = None,
) -> Product:
    if not actor.is_admin:
        raise Forbidden("Only administrators award badges")
    if official is not None:
        product.official = official
    if certified is not None:
        product.certified_at = (product.certified_at or utcnow()) if certified else None
    session.flush()
    audit.record(
        session,
        action="product.badges",
        actor=actor,
        target=product,
        org=product.organization_id,
        details={"repository": product.repository, "official": official, "certified": certified},
    )
    return product


def delete_product(session: Session, *, actor: Account, product: Product) -> None:
    accounts.require_role(session, actor, product.organization, "owner")
    if product.status != "draft":
        raise Conflict("Only draft products can be deleted; unpublish it first")
    from store.licensing.models import Entitlement

    if session.scalar(select(Entitlement.id).where(Entitlement.product_id == product.id).limit(1)):
        raise Conflict("This product has customers; it can be unpublished but not deleted")
    session.delete(product)
    session.flush()
    # Its images stay private: the rule has no product now.
    _access_changed(session, product.repository)


@dataclass
class ProductFilter:
    query: str = ""
    kind: str | None = None
    category: str | None = None
    pricing: str | None = None
    badge: str | None = None
    publisher: str | None = None
    platform: str | None = None
    status: str | None = "published"
    sort: str = "featured"
    errors: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.kind and self.kind not in KINDS:
            raise ValidationFailed(f"kind must be one of {', '.join(KINDS)}")
        if self.pricing and self.pricing not in PRICINGS:
            raise ValidationFailed(f"pricing must be one of {', '.join(PRICINGS)}")
        if self.badge and self.badge not in BADGES:
            raise ValidationFailed(f"badge must be one of {', '.join(BADGES)}")
        if self.status and self.status not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}")
        if self.sort not in ("featured", "newest", "title"):
            raise ValidationFailed("sort must be one of featured, newest, title")
        if len(self.query) > 200:
            raise ValidationFailed("The query is too long (200 characters at most)")


def _product_query(flt: ProductFilter) -> Select[Product]:
    stmt = select(Product).join(Organization, Organization.id == Product.organization_id)
    if flt.status:
        stmt = stmt.where(Product.status == flt.status)
    if flt.kind:
        stmt = stmt.where(Product.kind == flt.kind)
    if flt.publisher:
        stmt = stmt.where(Organization.slug == flt.publisher)
    if flt.category:
        stmt = stmt.where(
            exists().where(
                product_categories.c.product_id == Product.id,
                product_categories.c.category_slug == flt.category,
            )
        )
    if flt.platform:
        # Platforms are a short JSON list; match the quoted element in its text form.
        stmt = stmt.where(cast(Product.platforms, Text).contains(f'"{flt.platform}"'))
    active_tier = and_(Tier.product_id == Product.id, Tier.active.is_(True))
    if flt.pricing == "free":
        stmt = stmt.where(exists().where(active_tier, Tier.billing == BillingKind.FREE))
    elif flt.pricing == "paid":
        stmt = stmt.where(exists().where(active_tier, Tier.billing != BillingKind.FREE))
    elif flt.pricing == "trial":
        stmt = stmt.where(exists().where(active_tier, Tier.trial_days > 0))
    if flt.badge == "official":
        stmt = stmt.where(Product.official.is_(True))
    elif flt.badge == "certified":
        stmt = stmt.where(Product.certified_at.is_not(None))
    elif flt.badge == "verified":
        stmt = stmt.where(Organization.verified_at.is_not(None))
    if flt.query:
        for term in flt.query.lower().split()[:8]:
            like = "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            stmt = stmt.where(
                or_(
                    func.lower(Product.title).like(like, escape="\\"),
                    func.lower(Product.summary).like(like, escape="\\"),
                    Product.repository.like(like, escape="\\"),
                )
            )
    if flt.sort == "newest":
        stmt = stmt.order_by(Product.published_at.desc().nulls_last(), Product.repository)
    elif flt.sort == "title":
        stmt = stmt.order_by(func.lower(Product.title), Product.repository)
    else:
        stmt = stmt.order_by(
            Product.official.desc(),
            Product.certified_at.is_(None),
            Organization.verified_at.is_(None),
            func.lower(Product.title),
            Product.repository,
        )
    return stmt.options(selectinload(Product.tiers), selectinload(Product.categories))


def list_products(
    session: Session, flt: ProductFilter, *, page: int = 1, per_page: int = 24
) -> Page[Product]:
    flt.validate()
    if not 1 <= per_page <= 100:
        raise ValidationFailed("per_page must be between 1 and 100")
    return paginate(session, _product_query(flt), page=page, per_page=per_page)


def products_by_id(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, Product]:
    """Published products by id, with what a card shows loaded."""
    if not ids:
        return {}
    stmt = _product_query(ProductFilter()).where(Product.id.in_(ids))
    return {p.id: p for p in session.scalars(stmt).unique()}


def featured_products(session: Session, *, limit: int = 8) -> list[Product]:
    stmt = (
        _product_query(ProductFilter())
        .where(or_(Product.official.is_(True), Product.certified_at.is_not(None)))
        .limit(limit)
    )
    return list(session.scalars(stmt).unique())


def products_of_org(session: Session, org: Organization) -> list[Product]:
    return list(
        session.scalars(
            select(Product)
            .where(Product.organization_id == org.id)
            .order_by(Product.slug)
            .options(selectinload(Product.tiers))
        )
    )


def editable_products(session: Session, account: Account) -> list[Product]:
    return list(
        session.scalars(
            select(Product)
            .join(Membership, Membership.organization_id == Product.organization_id)
            .where(Membership.account_id == account.id)
            .order_by(Product.repository)
        )
    )


# --- tiers ----------------------------------------------------------------------------


def _apply_tier(tier: Tier, data: dict[str, object]) -> None:
    if "name" in data:
        tier.name = validation.text(
            str(data["name"] or ""), what="Tier name", max_len=120, required=True, field="name"
        )
    if "description" in data:
        tier.description = validation.text(
            str(data["description"] or ""), what="Tier description", max_len=2000, lines=True
        )
    if "billing" in data:
        tier.billing = BillingKind.parse(data["billing"])
    if "amount_minor" in data:
        amount = data["amount_minor"]
        if (
            not isinstance(amount, int)
            or isinstance(amount, bool)
            or not 0 <= amount <= MAX_AMOUNT_MINOR
        ):
            raise ValidationFailed(
                "The amount must be a whole number of minor units (cents), 0 or more",
                field="amount_minor",
            )
        tier.amount_minor = amount
    if "currency" in data:
        currency = str(data["currency"] or "").lower()
        if not _CURRENCY.match(currency):
            raise ValidationFailed(
                "Currency must be a three-letter ISO code such as usd or eur", field="currency"
            )
        tier.currency = currency
    if "trial_days" in data:
        days = data["trial_days"]
        if not isinstance(days, int) or not 0 <= days <= 365:
            raise ValidationFailed("Trial days must be between 0 and 365", field="trial_days")
        tier.trial_days = days
    if "seats" in data:
        seats = data["seats"]
        if seats is not None and (not isinstance(seats, int) or not 1 <= seats <= 1_000_000):
            raise ValidationFailed(
                "Seats must be a positive number, or empty for unlimited", field="seats"
            )
        tier.seats = seats
    if "features" in data:
        features = [f.strip() for f in _strings(data["features"], what="Features") if f.strip()]
        if len(features) > 30 or any(len(f) > 200 for f in features):
            raise ValidationFailed("At most 30 features of 200 characters each")
        tier.features = features
    if "public" in data:
        tier.public = bool(data["public"])
    if "active" in data:
        tier.active = bool(data["active"])
    if "sort_order" in data:
        order = data["sort_order"]
        if not isinstance(order, int) or isinstance(order, bool):  # null was a 500
            raise ValidationFailed("Sort order must be a whole number")
        tier.sort_order = order
    # Consistency between billing, price and trial.
    if tier.is_free:
        if tier.amount_minor:
            raise ValidationFailed("A free tier has no price", field="amount_minor")
        if tier.trial_days:
            raise ValidationFailed("A free tier has no trial", field="trial_days")
    else:
        if tier.amount_minor <= 0:
            raise ValidationFailed("A paid tier needs a price above zero", field="amount_minor")
        if tier.public:
            raise ValidationFailed("Only free tiers can be public", field="public")
        if tier.trial_days and not tier.recurring:
            raise ValidationFailed(
                "Trials are offered on monthly or yearly subscriptions only", field="trial_days"
            )


def create_tier(
    session: Session, *, actor: Account, product: Product, slug: str, **data: object
) -> Tier:
    accounts.require_role(session, actor, product.organization, "editor")
    slug = validation.registry_component(
        slug.lower(), what="Tier id", min_len=1, max_len=64, field="slug"
    )
    taken = Conflict(
        f"{product.repository} already has a tier '{slug}'", code="tier_taken", field="slug"
    )
    if any(t.slug == slug for t in product.tiers):
        raise taken
    data.setdefault("billing", BillingKind.FREE)
    data.setdefault("name", slug.replace("-", " ").title())
    data.setdefault("sort_order", len(product.tiers))
    tier = Tier(slug=slug, billing=BillingKind.FREE, name="")
    _apply_tier(tier, data)
    try:
        with session.begin_nested():
            tier.product = product
            session.add(tier)
            session.flush()
    except IntegrityError:
        raise taken from None  # made at the same instant by another request (PostgreSQL)
    _access_changed(session, product.repository)
    if not tier.is_free:
        events.publish(session, events.PriceChanged(tier.id))
    return tier


def update_tier(session: Session, *, actor: Account, tier: Tier, **data: object) -> Tier:
    """Edit a tier. What customers already bought is copied onto their entitlements and orders,
    so edits (price included) apply to new purchases only."""
    accounts.require_role(session, actor, tier.product.organization, "editor")
    unknown = set(data) - {
        "name",
        "description",
        "billing",
        "amount_minor",
        "currency",
        "trial_days",
        "seats",
        "features",
        "public",
        "active",
        "sort_order",
    }
    if unknown:
        raise ValidationFailed(f"Unknown field {', '.join(sorted(unknown))}")
    before = (tier.billing, tier.amount_minor, tier.currency)
    from store.licensing.models import Entitlement

    if "billing" in data and data["billing"] != tier.billing:
        # The tier's row locked first (FOR UPDATE, which the foreign-key lock of an
        # entitlement being made for it waits for and makes wait; store.licensing.entitlements
        # locks it too before reading the billing): a first customer getting it at this
        # instant is seen, or sees the new billing.
        lock_row(session, Tier, tier.id, populate=False)
        if session.scalar(select(Entitlement.id).where(Entitlement.tier_id == tier.id).limit(1)):
            raise Conflict(
                "The billing period of a tier with customers cannot change; add a new tier",
                code="tier_has_customers",
                field="billing",
            )
    with session.begin_nested():  # a rejected edit leaves the tier as it was
        _apply_tier(tier, data)
        if (tier.billing, tier.amount_minor, tier.currency) != before:
            tier.gateway_price_ref = None  # a new gateway price is made; old ones stay as they were
        if tier.product.status == "published" and not tier.product.active_tiers:
            raise Conflict("A published product needs at least one active tier")
    _access_changed(session, tier.product.repository)
    if (tier.billing, tier.amount_minor, tier.currency) != before and not tier.is_free:
        events.publish(session, events.PriceChanged(tier.id))
    return tier


def get_tier(session: Session, tier_id: uuid.UUID) -> Tier:
    tier = session.get(Tier, tier_id)
    if tier is None:
        raise NotFound("No such tier")
    return tier


def get_tier_by_slug(session: Session, product: Product, slug: str) -> Tier:
    for tier in product.tiers:
        if tier.slug == slug:
            return tier
    raise NotFound(f"{product.repository} has no tier '{slug}'")
