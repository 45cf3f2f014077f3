"""The Jinja2 environment, its filters, flash messages and the one render helper."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from store import TEMPLATES_DIR, __version__
from store.billing.offers import offer_of
from store.catalog import money
from store.catalog.markdown import render as render_markdown
from store.catalog.models import Product, Tier
from store.catalog.periods import BillingKind
from store.config import Settings
from store.web import charts
from store.web.csrf import csrf_field

# Kept under these names for the templates and existing callers.
minor_exponent = money.currency_exponent
format_money = money.format_money


def format_price(tier: Tier) -> str:
    """ "Free", "$49.00 / month", "$490.00 / year" or "$99.00 one-time"."""
    kind = BillingKind(tier.billing)
    if not kind.paid:
        return "Free"
    money = format_money(tier.amount_minor, tier.currency)
    if kind.interval is None:
        return f"{money} one-time"
    return f"{money} / {kind.interval}"


def price_line(product: Product) -> str:
    """The product's prices in one line: "Free · paid plans from $49.00 / month",
    "From $49.00 / month", "Free", or "" when nothing is offered."""
    offer = offer_of(product.tiers)
    if offer.cheapest is None:
        return "Free" if offer.free is not None else ""
    cheapest = format_price(offer.cheapest)
    if offer.free is not None:
        return f"Free · paid plans from {cheapest}"
    return f"From {cheapest}"


def _billing_label(value: object) -> str:
    """ "month" → "Monthly" (unknown values as they are)."""
    try:
        return BillingKind(str(value)).label
    except ValueError:
        return str(value)


def format_date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value is not None else ""


def format_datetime(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


def markdown(text: str | None) -> Markup:
    # store.catalog.markdown escapes raw HTML and sanitises the result with nh3.
    return Markup(render_markdown(text or ""))  # noqa: S704


def format_size(value: int | None) -> str:
    """Bytes as people read them (1000-based, as Docker Hub shows image sizes)."""
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def registry_host(settings: Settings) -> str:
    """The host[:port] that docker commands name: the registry URL without its scheme."""
    return urlsplit(settings.registry_url).netloc


def create_templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        money=format_money,
        price=format_price,
        date=format_date,
        datetime=format_datetime,
        markdown=markdown,
        billing_label=_billing_label,
        price_line=price_line,
        offer=lambda product: offer_of(product.tiers),
        filesize=format_size,
    )
    env.globals.update(
        csrf_field=csrf_field,
        store_version=__version__,
        # Pages of other domains (billing/sales.html) draw their charts with this.
        sales_charts=lambda rows: charts.sales_charts(rows, money=format_money),
    )
    return Jinja2Templates(env=env)


# --- flash messages -------------------------------------------------------------------

_FLASH_KEY = "_flashes"


def flash(request: Request, message: str, category: str = "success") -> None:
    """A message shown once, on the next page rendered (categories: success, info, error)."""
    flashes = list(request.session.get(_FLASH_KEY, []))
    flashes.append([category, message])
    request.session[_FLASH_KEY] = flashes[-5:]


def pop_flashes(request: Request) -> list[tuple[str, str]]:
    if "session" not in request.scope:
        return []
    raw = request.session.pop(_FLASH_KEY, [])
    return [(str(c), str(m)) for c, m in raw]


# --- responses ------------------------------------------------------------------------


def base_context(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    return {
        "me": getattr(request.state, "me", None),
        "flashes": pop_flashes(request),
        "has_session": "session" in request.scope,
        "registry_host": registry_host(settings),
        "search_q": request.query_params.get("q", "")
        if request.url.path in ("/browse", "/search")
        else "",
        "path": request.url.path,
        "test_payments_banner": _test_payments_banner(request.app.state, settings),
    }


def _test_payments_banner(state: Any, settings: Settings) -> bool:
    """Production running on the built-in test gateway (STORE_ALLOW_TEST_PAYMENTS=true)."""
    if settings.environment != "production" or not settings.allow_test_payments:
        return False
    billing = getattr(state, "billing", None)
    return bool(getattr(billing, "test_mode", True))


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
    no_store: bool = False,
) -> Response:
    templates: Jinja2Templates = request.app.state.web_templates
    full = base_context(request)
    full.update(context or {})
    response = templates.TemplateResponse(request, name, full, status_code=status)
    if no_store:
        response.headers["Cache-Control"] = "no-store"
    return response


def redirect(url: str) -> RedirectResponse:
    """After a successful POST: 303 See Other, so the browser follows with a GET."""
    return RedirectResponse(url, status_code=303)


def with_query(path: str, **params: str | int | None) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(clean)}" if clean else path
