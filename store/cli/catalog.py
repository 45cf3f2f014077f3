"""Operator commands for the catalog: `store products|tiers ...` (see store.cli.admin)."""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from store.accounts import service as accounts
from store.billing.catalog_follow import after_edit
from store.billing.config import BillingSettings
from store.billing.runtime import build_billing
from store.catalog import service as catalog
from store.catalog.models import Product
from store.catalog.periods import BillingKind
from store.cli._common import (
    CommandError,
    add_command,
    command,
    csv_list,
    decimal_amount,
    details,
    emit,
    load_settings,
    non_negative_int,
    on_off,
    open_engine,
    positive_int,
    product_out,
    repository,
    resolve_actor,
    table,
    tier_out,
    to_minor,
    unit_of_work,
    usage_error,
)
from store.config import Settings
from store.db import make_sessionmaker

if TYPE_CHECKING:
    from typing import TypeAlias

    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


from store.cli.admin import group

PRODUCT_HELP = "the product's repository, ORG/NAME"
TIER_HELP = "the tier's id within the product (its slug)"


def register(subparsers: SubParsers) -> None:
    """Add the command groups to the `store` parser."""
    _register_products(subparsers)
    _register_tiers(subparsers)


# --- products -------------------------------------------------------------------------


def _register_products(subparsers: SubParsers) -> None:
    sub = group(subparsers, "products", "list and manage products")
    p = add_command(sub, "list", _products_list, help="list products (every status)")
    p.add_argument("--status", choices=catalog.STATUSES, help="only products in this status")
    p.add_argument("--org", metavar="ORG", help="only this organization's products (its slug)")
    p.add_argument("--kind", choices=catalog.KINDS, help="only container images or only plugins")
    p = add_command(sub, "show", _products_show, help="show a product and its tiers")
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p = add_command(sub, "create", _products_create, help="create a draft product", actor=True)
    p.add_argument("--org", required=True, metavar="ORG", help="the publishing organization's slug")
    p.add_argument("--slug", required=True, help="repository name within the organization")
    p.add_argument("--title", required=True, help="name shown in the catalog, up to 200 characters")
    p.add_argument(
        "--kind", required=True, choices=catalog.KINDS, help="a container image or a plugin"
    )
    _listing_options(p)
    p = add_command(sub, "update", _products_update, help="edit a product's listing", actor=True)
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p.add_argument("--title", help="name shown in the catalog, up to 200 characters")
    _listing_options(p)
    for name, func_, help_ in (
        ("publish", _products_publish, "publish (needs an active tier)"),
        ("unpublish", _products_unpublish, "return to draft"),
        ("reinstate", _products_reinstate, "publish a suspended product again"),
    ):
        p = add_command(sub, name, func_, help=help_, actor=True)
        p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p = add_command(
        sub, "suspend", _products_suspend, help="suspend (hide, stop pulls)", actor=True
    )
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p.add_argument("--reason", required=True, help="why (kept with the product)")
    p = add_command(sub, "badge", _products_badge, help="award or remove badges", actor=True)
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p.add_argument(
        "--official", type=on_off, metavar="on|off", help="award (on) or remove (off) the badge"
    )
    p.add_argument(
        "--certified",
        type=on_off,
        metavar="on|off",
        help="off removes the badge (it is awarded through the certification review)",
    )


def _listing_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", help="one line for the catalog, up to 300 characters")
    p.add_argument("--description-file", type=Path, help="Markdown description ('-' = stdin)")
    p.add_argument("--categories", type=csv_list, metavar="A,B", help="category slugs")
    p.add_argument("--platforms", type=csv_list, metavar="OS/ARCH,...", help="e.g. linux/amd64")
    for name, what in (
        ("logo", "the logo image"),
        ("docs", "the documentation"),
        ("support", "where customers get support"),
        ("eula", "the end-user license agreement"),
    ):
        p.add_argument(f"--{name}-url", metavar="URL", help=f"{what}, an http(s):// address")


def _listing(args: argparse.Namespace) -> dict[str, object]:
    listing: dict[str, object] = {}
    for key in (
        "summary",
        "categories",
        "platforms",
        "logo_url",
        "docs_url",
        "support_url",
        "eula_url",
    ):
        if getattr(args, key) is not None:
            listing[key] = getattr(args, key)
    if args.description_file is not None:
        listing["description_md"] = _read_text(args.description_file)
    return listing


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"Cannot read {path}: {exc.strerror}") from None


def _product_text(d: dict[str, Any]) -> str:
    keys = ["repository", "title", "kind", "status", "official", "certified", "categories"]
    text = details(d, [*keys, "platforms", "summary", "id"])
    if "tiers" in d:
        cols = ["slug", "name", "billing", "price", "currency", "active", "public"]
        text += "\n\n" + table(d["tiers"], cols, empty="No tiers.")
    return text


@command
def _products_list(args: argparse.Namespace) -> int:
    """List products of every status, or filtered by --status, --org and --kind."""
    with unit_of_work() as session:
        stmt = (
            select(Product).order_by(Product.repository).options(selectinload(Product.categories))
        )
        if args.status:
            stmt = stmt.where(Product.status == args.status)
        if args.org:
            stmt = stmt.where(
                Product.organization_id == accounts.get_organization(session, args.org).id
            )
        if args.kind:
            stmt = stmt.where(Product.kind == args.kind)
        data = [product_out(p) for p in session.scalars(stmt)]
    cols = ["repository", "kind", "status", "title"]
    emit(args, data, text=lambda d: table(d, cols, empty="No products."))
    return 0


@command
def _products_show(args: argparse.Namespace) -> int:
    """Show a product, its listing and all its tiers."""
    with unit_of_work() as session:
        data = product_out(catalog.get_product_by_repository(session, args.product), full=True)
    emit(args, data, text=_product_text)
    return 0


@command
def _products_create(args: argparse.Namespace) -> int:
    """Create a product in draft; add tiers, then publish it."""
    listing = _listing(args)
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        product = catalog.create_product(
            session,
            actor=actor,
            org=org,
            kind=args.kind,
            slug=args.slug,
            title=args.title,
            **listing,
        )
        data = product_out(product, full=True)
    emit(args, data, text=lambda d: f"Created {d['kind']} {d['repository']} (draft)")
    return 0


@command
def _products_update(args: argparse.Namespace) -> int:
    """Edit a product's listing; only the options given change."""
    listing = _listing(args)
    if args.title is not None:
        listing["title"] = args.title
    if not listing:
        usage_error(args, "give at least one field to change")
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        catalog.update_product(session, actor=actor, product=product, **listing)
        data = product_out(product, full=True)
    emit(args, data, text=lambda d: f"Updated {d['repository']}")
    return 0


def _gateway_follows(settings: Settings, product_id: uuid.UUID) -> None:
    """Once the edit committed, the payment gateway is told what it recorded, as the site does
    after its response (store.catalog.events); what fails is sent by the next sweep."""
    billing = build_billing(BillingSettings(), settings)
    with open_engine(settings) as engine:
        after_edit(make_sessionmaker(engine), billing, product_id)


def _set_status(args: argparse.Namespace, status: str, reason: str = "") -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        catalog.set_status(session, actor=actor, product=product, status=status, reason=reason)
        data = product_out(product, full=True)
    _gateway_follows(settings, product.id)
    emit(args, data, text=lambda d: f"{d['repository']} is {d['status']}")
    return 0


@command
def _products_publish(args: argparse.Namespace) -> int:
    """Publish a draft product (it needs at least one active tier)."""
    return _set_status(args, "published")


@command
def _products_unpublish(args: argparse.Namespace) -> int:
    """Return a published product to draft: it leaves the catalog."""
    return _set_status(args, "draft")


@command
def _products_suspend(args: argparse.Namespace) -> int:
    """Suspend a product: hidden from the catalog and pulls refused, until reinstated."""
    return _set_status(args, "suspended", args.reason)


@command
def _products_reinstate(args: argparse.Namespace) -> int:
    """Publish a suspended product again."""
    return _set_status(args, "published")


@command
def _products_badge(args: argparse.Namespace) -> int:
    """Award or remove the official badge, or remove the certified one (certifying goes
    through the certification review: `store` refuses --certified on)."""
    if args.official is None and args.certified is None:
        usage_error(args, "give --official and/or --certified")
    if args.certified:
        raise CommandError(catalog.CERTIFY_THROUGH_REVIEW)
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        catalog.set_badges(
            session, actor=actor, product=product, official=args.official, certified=args.certified
        )
        data = product_out(product, full=True)
    emit(
        args,
        data,
        text=lambda d: f"{d['repository']}: official {d['official']}, certified {d['certified']}",
    )
    return 0


# --- tiers ----------------------------------------------------------------------------


def _register_tiers(subparsers: SubParsers) -> None:
    sub = group(subparsers, "tiers", "list and manage a product's tiers and prices")
    p = add_command(sub, "list", _tiers_list, help="list a product's tiers")
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p = add_command(sub, "create", _tiers_create, help="add a tier", actor=True)
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p.add_argument(
        "--slug",
        required=True,
        help="id within the product, e.g. pro (lowercase letters, digits, '.', '_' or '-')",
    )
    p.add_argument(
        "--name", help="name shown to customers (default: from the slug, team-plan → Team Plan)"
    )
    p.add_argument(
        "--billing",
        required=True,
        choices=catalog.BILLINGS,
        help="free, one_time (a single payment), month or year (a subscription)",
    )
    p.add_argument("--price", type=decimal_amount, help="e.g. 49.00 (omit for free tiers)")
    p.add_argument("--currency", default="usd", help="ISO code (default %(default)s)")
    _tier_options(p)
    p.add_argument("--public", action="store_true", help="free tier anyone may pull anonymously")
    p = add_command(sub, "update", _tiers_update, help="edit a tier", actor=True)
    p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
    p.add_argument("tier", metavar="TIER", help=TIER_HELP)
    p.add_argument("--name", help="name shown to customers")
    p.add_argument(
        "--price", type=decimal_amount, help="e.g. 49.00 (new purchases only; buyers keep theirs)"
    )
    p.add_argument("--currency", help="ISO code, e.g. usd or eur")
    _tier_options(p)
    p.add_argument("--unlimited-seats", action="store_true", help="remove the seat limit")
    p.add_argument("--clear-features", action="store_true", help="remove every feature line")
    p.add_argument(
        "--public",
        type=on_off,
        metavar="on|off",
        help="on lets anyone pull anonymously (free tiers only)",
    )
    p.add_argument(
        "--active", type=on_off, metavar="on|off", help="on sells the tier, off stops selling it"
    )
    for name, func_, help_ in (
        ("deactivate", _tiers_deactivate, "stop selling a tier (holders keep access)"),
        ("activate", _tiers_activate, "sell a deactivated tier again"),
    ):
        p = add_command(sub, name, func_, help=help_, actor=True)
        p.add_argument("product", metavar="ORG/NAME", type=repository, help=PRODUCT_HELP)
        p.add_argument("tier", metavar="TIER", help=TIER_HELP)


def _tier_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description", help="what the tier offers, up to 2000 characters")
    p.add_argument(
        "--trial-days",
        type=non_negative_int,
        metavar="DAYS",
        help="free trial before the first charge, 0-365, 0 for none (month and year tiers)",
    )
    p.add_argument("--seats", type=positive_int, help="seat limit (default unlimited)")
    p.add_argument(
        "--feature",
        action="append",
        dest="features",
        metavar="TEXT",
        help="a feature line shown with the tier; repeatable, the lines given replace the list",
    )


def _tier_fields(args: argparse.Namespace, currency: str) -> dict[str, object]:
    data: dict[str, object] = {}
    for key in ("name", "description", "trial_days", "seats", "features"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    if args.price is not None:
        data["amount_minor"] = to_minor(args.price, currency)
    return data


def _tiers_text(d: list[dict[str, Any]]) -> str:
    cols = [
        "slug",
        "name",
        "billing",
        "price",
        "currency",
        "trial_days",
        "seats",
        "active",
        "public",
    ]
    return table(d, cols, empty="No tiers.")


@command
def _tiers_list(args: argparse.Namespace) -> int:
    """List every tier of a product, inactive ones included."""
    with unit_of_work() as session:
        product = catalog.get_product_by_repository(session, args.product)
        data = [tier_out(t) for t in product.tiers]
    emit(args, data, text=_tiers_text)
    return 0


@command
def _tiers_create(args: argparse.Namespace) -> int:
    """Add a tier: free, one_time, month or year billing, with a price for paid tiers."""
    if args.billing != BillingKind.FREE and args.price is None:
        usage_error(args, "a paid tier needs --price")
    currency = args.currency.strip().lower()
    fields = _tier_fields(args, currency)
    settings = load_settings()
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        tier = catalog.create_tier(
            session,
            actor=actor,
            product=product,
            slug=args.slug,
            billing=args.billing,
            currency=currency,
            public=args.public,
            **fields,
        )
        data = tier_out(tier)
    _gateway_follows(settings, product.id)
    emit(args, data, text=lambda d: f"Added tier {d['slug']} to {d['product']}")
    return 0


@command
def _tiers_update(args: argparse.Namespace) -> int:
    """Edit a tier; only the options given change. Customers keep what they bought."""
    if args.seats is not None and args.unlimited_seats:
        usage_error(args, "--seats and --unlimited-seats exclude each other")
    if args.features is not None and args.clear_features:
        usage_error(args, "--feature and --clear-features exclude each other")
    settings = load_settings()
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        tier = catalog.get_tier_by_slug(
            session, catalog.get_product_by_repository(session, args.product), args.tier
        )
        currency = (args.currency or tier.currency).strip().lower()
        fields = _tier_fields(args, currency)
        if args.currency is not None:
            fields["currency"] = currency
        if args.unlimited_seats:
            fields["seats"] = None
        if args.clear_features:
            fields["features"] = []
        for key in ("public", "active"):
            if getattr(args, key) is not None:
                fields[key] = getattr(args, key)
        if not fields:
            usage_error(args, "give at least one field to change")
        catalog.update_tier(session, actor=actor, tier=tier, **fields)
        data = tier_out(tier)
        product_id = tier.product_id
    _gateway_follows(settings, product_id)
    emit(args, data, text=lambda d: f"Updated tier {d['slug']} of {d['product']}")
    return 0


def _set_tier_active(args: argparse.Namespace, active: bool) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        tier = catalog.get_tier_by_slug(session, product, args.tier)
        catalog.update_tier(session, actor=actor, tier=tier, active=active)
        data = tier_out(tier)
    _gateway_follows(settings, product.id)
    state = "active" if active else "inactive"
    emit(args, data, text=lambda d: f"Tier {d['slug']} of {d['product']} is {state}")
    return 0


@command
def _tiers_deactivate(args: argparse.Namespace) -> int:
    """Stop selling a tier; existing entitlements are kept."""
    return _set_tier_active(args, False)


@command
def _tiers_activate(args: argparse.Namespace) -> int:
    """Sell a deactivated tier again."""
    return _set_tier_active(args, True)
