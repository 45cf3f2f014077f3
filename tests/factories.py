"""Small helpers that make valid objects with overridable fields."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.catalog import service as catalog
from store.catalog.models import Product, Tier

_seq = itertools.count(1)
PASSWORD = "correct horse battery"


def make_account(session: Session, username: str | None = None, **overrides: Any) -> Account:
    n = next(_seq)
    username = username or f"user{n}"
    data: dict[str, Any] = {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        # An established account: its address is confirmed (pass email_verified=False for
        # one that has just signed up).
        "email_verified": True,
    }
    data.update(overrides)
    return accounts.create_account(session, **data)


def make_admin(session: Session, username: str = "root-admin") -> Account:
    return make_account(session, username, is_admin=True)


def make_org(
    session: Session, owner: Account, slug: str | None = None, **overrides: Any
) -> Organization:
    slug = slug or f"org{next(_seq)}"
    return accounts.create_organization(
        session, owner=owner, slug=slug, name=overrides.pop("name", slug.title()), **overrides
    )


def make_product(
    session: Session,
    org: Organization,
    actor: Account,
    slug: str | None = None,
    *,
    publish: bool = True,
    tiers: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> Product:
    slug = slug or f"app{next(_seq)}"
    product = catalog.create_product(
        session,
        actor=actor,
        org=org,
        kind=overrides.pop("kind", "image"),
        slug=slug,
        title=overrides.pop("title", slug.replace("-", " ").title()),
        summary=overrides.pop("summary", f"The {slug} product"),
        **overrides,
    )
    for tier in tiers if tiers is not None else [{"slug": "free", "billing": "free"}]:
        tier = dict(tier)
        catalog.create_tier(session, actor=actor, product=product, slug=tier.pop("slug"), **tier)
    session.refresh(product)
    if publish:
        catalog.set_status(session, actor=actor, product=product, status="published")
    return product


def paid_tier(
    slug: str = "pro", amount: int = 4900, billing: str = "month", **kw: Any
) -> dict[str, Any]:
    return {"slug": slug, "billing": billing, "amount_minor": amount, "currency": "usd", **kw}


def tier_of(product: Product, slug: str) -> Tier:
    return catalog.get_tier_by_slug(None, product, slug)  # type: ignore[arg-type]


def api_token(
    session: Session, account: Account, scopes: tuple[str, ...] = ("api", "pull", "push")
) -> str:
    issued = accounts.create_token(
        session, kind="personal", name="tests", scopes=list(scopes), created_by=account
    )
    return issued.secret


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
