"""Products, tiers, categories, badges and browsing, through the service layer."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from store.catalog import service
from store.catalog.markdown import render
from store.errors import Conflict, Forbidden, NotFound, ValidationFailed
from store.licensing import entitlements
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier


def test_product_is_bound_to_the_org_namespace(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner, "acme")
    product = make_product(session, org, owner, "redis-ha", categories=["databases"])
    assert product.repository == "acme/redis-ha"
    assert [c.slug for c in product.categories] == ["databases"]
    with pytest.raises(Conflict, match="exists"):
        make_product(session, org, owner, "redis-ha")


def test_only_editors_create_products(session: Session) -> None:
    owner = make_account(session)
    stranger = make_account(session)
    org = make_org(session, owner)
    with pytest.raises(Forbidden):
        make_product(session, org, stranger)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "vm", "Kind"),
        ("slug", "Bad Name", "Repository name"),
        ("title", "", "Title is required"),
        ("docs_url", "javascript:alert(1)", "http"),
        ("platforms", ["amd64"], "OS/architecture"),
    ],
)
def test_listing_validation(session: Session, field: str, value: object, message: str) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    data: dict[str, object] = {"kind": "image", "slug": "app", "title": "App", field: value}
    with pytest.raises(ValidationFailed, match=message):
        service.create_product(session, actor=owner, org=org, **data)  # type: ignore[arg-type]


def test_publishing_needs_an_active_tier(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner, tiers=[], publish=False)
    with pytest.raises(Conflict, match="tier"):
        service.set_status(session, actor=owner, product=product, status="published")
    service.create_tier(session, actor=owner, product=product, slug="free")
    service.set_status(session, actor=owner, product=product, status="published")
    assert product.status == "published" and product.published_at is not None


def test_only_admins_suspend_and_reinstate(session: Session) -> None:
    owner = make_account(session)
    admin = make_admin(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner)
    with pytest.raises(Forbidden):
        service.set_status(session, actor=owner, product=product, status="suspended", reason="x")
    with pytest.raises(ValidationFailed, match="why"):
        service.set_status(session, actor=admin, product=product, status="suspended")
    service.set_status(session, actor=admin, product=product, status="suspended", reason="malware")
    with pytest.raises(Forbidden):
        service.set_status(session, actor=owner, product=product, status="published")
    service.set_status(session, actor=admin, product=product, status="published")


def test_drafts_are_invisible_to_strangers(session: Session) -> None:
    owner = make_account(session)
    stranger = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner, publish=False)
    assert service.get_visible_product(session, product.repository, owner) is product
    with pytest.raises(NotFound):
        service.get_visible_product(session, product.repository, stranger)
    with pytest.raises(NotFound):
        service.get_visible_product(session, product.repository, None)


@pytest.mark.parametrize(
    ("tier", "message"),
    [
        ({"billing": "free", "amount_minor": 100}, "free tier has no price"),
        ({"billing": "month", "amount_minor": 0}, "price above zero"),
        ({"billing": "one_time", "amount_minor": 100, "trial_days": 7}, "Trials"),
        ({"billing": "year", "amount_minor": 100, "public": True}, "Only free tiers"),
        ({"billing": "weekly"}, "Billing"),
        ({"billing": "month", "amount_minor": 100, "currency": "dollars"}, "Currency"),
        ({"billing": "month", "amount_minor": -5}, "amount"),
        ({"billing": "free", "seats": 0}, "Seats"),
    ],
)
def test_tier_validation(session: Session, tier: dict[str, object], message: str) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner, tiers=[], publish=False)
    with pytest.raises(ValidationFailed, match=message):
        service.create_tier(session, actor=owner, product=product, slug="t", **tier)


def test_price_change_does_not_touch_existing_customers(session: Session) -> None:
    owner = make_account(session)
    customer = make_account(session)
    org = make_org(session, owner)
    product = make_product(
        session, org, owner, tiers=[paid_tier("pro", 4900, seats=5, features=["support"])]
    )
    tier = product.tiers[0]
    tier.gateway_price_ref = "price_old"
    held = entitlements.grant(session, actor=owner, tier=tier, account=customer)
    service.update_tier(
        session, actor=owner, tier=tier, amount_minor=5900, seats=10, features=["sla"]
    )
    assert tier.gateway_price_ref is None  # a new gateway price will be made
    assert (held.seats, held.features) == (5, ["support"])
    with pytest.raises(Conflict, match="billing period"):
        service.update_tier(session, actor=owner, tier=tier, billing="year")


def test_published_product_keeps_an_active_tier(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner)
    with pytest.raises(Conflict, match="at least one active tier"):
        service.update_tier(session, actor=owner, tier=product.tiers[0], active=False)


def test_public_product(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    public = make_product(
        session, org, owner, tiers=[{"slug": "free", "billing": "free", "public": True}]
    )
    mixed = make_product(
        session,
        org,
        owner,
        tiers=[{"slug": "free", "billing": "free", "public": True}, paid_tier()],
    )
    assert public.is_public
    assert not mixed.is_public


def test_browse_filters_and_pagination(session: Session) -> None:
    owner = make_account(session)
    admin = make_admin(session)
    org = make_org(session, owner, "acme")
    other = make_org(session, make_account(session), "globex")
    db = make_product(
        session,
        org,
        owner,
        "pg",
        title="Postgres Pro",
        categories=["databases"],
        platforms=["linux/amd64", "linux/arm64"],
    )
    plugin = make_product(
        session, org, owner, "lint", kind="plugin", tiers=[paid_tier(trial_days=14)]
    )
    official = make_product(session, other, other_owner(session, other), "nginx", title="Nginx")
    service.set_badges(session, actor=admin, product=official, official=True)
    make_product(session, org, owner, "hidden", publish=False)

    def names(**kw: object) -> list[str]:
        flt = service.ProductFilter(**kw)  # type: ignore[arg-type]
        return [p.repository for p in service.list_products(session, flt).items]

    assert names()[0] == "globex/nginx"  # official first
    assert "acme/hidden" not in names()
    assert names(kind="plugin") == ["acme/lint"]
    assert names(category="databases") == ["acme/pg"]
    assert names(pricing="trial") == ["acme/lint"]
    assert set(names(pricing="free")) == {"acme/pg", "globex/nginx"}
    assert names(badge="official") == ["globex/nginx"]
    assert names(publisher="globex") == ["globex/nginx"]
    assert names(platform="linux/arm64") == ["acme/pg"]
    assert names(query="postgres") == ["acme/pg"]
    assert names(query="100%_") == []
    page = service.list_products(session, service.ProductFilter(sort="title"), page=2, per_page=2)
    assert page.total == 3 and page.pages == 2 and [p.repository for p in page.items] == ["acme/pg"]
    assert db in service.featured_products(session) or official in service.featured_products(
        session
    )
    assert plugin not in service.featured_products(session)
    with pytest.raises(ValidationFailed, match="pricing"):
        service.list_products(session, service.ProductFilter(pricing="cheap"))


def other_owner(session: Session, org: object) -> object:
    from store.accounts import service as accounts

    return accounts.members(session, org)[0].account  # type: ignore[arg-type]


def test_markdown_is_sanitised() -> None:
    html = render(
        "# Title\n\n<script>alert(1)</script>\n\n[x](javascript:alert(1)) <img src=x onerror=y>"
    )
    assert "<h1>Title</h1>" in html
    assert "<script" not in html and "<img" not in html  # shown as text, never as markup
    assert "&lt;script&gt;" in html
    assert 'href="javascript' not in html


def test_rejected_edits_leave_nothing_behind(session: Session) -> None:
    owner = make_account(session)
    org = make_org(session, owner)
    product = make_product(session, org, owner, title="Before")
    with pytest.raises(ValidationFailed):
        service.update_product(
            session, actor=owner, product=product, title="After", docs_url="ftp://x"
        )
    assert product.title == "Before"
    tier = product.tiers[0]
    with pytest.raises(Conflict):
        service.update_tier(session, actor=owner, tier=tier, name="Renamed", active=False)
    assert (tier.name, tier.active) == ("Free", True)
