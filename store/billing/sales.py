"""Publisher sales: paid orders by product, tier and month, and their CSV export."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account, Organization
from store.billing.models import Order
from store.catalog.models import Product

CSV_COLUMNS = (
    "month",
    "product",
    "tier",
    "currency",
    "orders",
    "gross_minor",
    "tax_minor",
    "refunded_minor",
    "net_minor",
)


@dataclass
class SalesRow:
    month: str  # YYYY-MM (UTC)
    product: str  # repository
    product_title: str
    tier: str  # slug
    tier_name: str
    currency: str
    orders: int = 0
    gross_minor: int = 0  # before tax
    tax_minor: int = 0
    refunded_minor: int = 0

    @property
    def net_minor(self) -> int:
        """Revenue before tax less everything refunded (refunds include any tax refunded)."""
        return self.gross_minor - self.refunded_minor


def sales_of(
    session: Session,
    *,
    actor: Account,
    org: Organization,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SalesRow]:
    """Paid orders of the organisation's products (members with any role, and admins)."""
    if not actor.is_admin:
        accounts.require_role(session, actor, org, "viewer")
    stmt = (
        select(Order)
        .join(Product, Product.id == Order.product_id)
        .where(Product.organization_id == org.id, Order.paid_at.is_not(None))
        .order_by(Order.paid_at)
    )
    since, until = _aware(since), _aware(until)
    if since is not None:
        stmt = stmt.where(Order.paid_at >= since)
    if until is not None:
        stmt = stmt.where(Order.paid_at < until)
    rows: dict[tuple[str, str, str, str], SalesRow] = {}
    for order in session.scalars(stmt):
        assert order.paid_at is not None
        key = (f"{order.paid_at:%Y-%m}", order.product.repository, order.tier.slug, order.currency)
        row = rows.get(key)
        if row is None:
            row = rows[key] = SalesRow(
                month=key[0],
                product=key[1],
                product_title=order.product.title,
                tier=key[2],
                tier_name=order.tier.name,
                currency=key[3],
            )
        row.orders += 1
        row.gross_minor += order.amount_minor
        row.tax_minor += order.tax_minor
        row.refunded_minor += order.refunded_minor
    return sorted(
        rows.values(), key=lambda r: (r.month, r.product, r.tier, r.currency), reverse=True
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def totals(rows: list[SalesRow]) -> dict[str, dict[str, int]]:
    """Per currency: orders, gross, tax, refunded, net."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        t = out.setdefault(
            row.currency,
            {"orders": 0, "gross_minor": 0, "tax_minor": 0, "refunded_minor": 0, "net_minor": 0},
        )
        t["orders"] += row.orders
        t["gross_minor"] += row.gross_minor
        t["tax_minor"] += row.tax_minor
        t["refunded_minor"] += row.refunded_minor
        t["net_minor"] += row.net_minor
    return out


def _safe_cell(value: object) -> object:
    # Cells a spreadsheet would run as formulas are quoted (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def to_csv(rows: list[SalesRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                _safe_cell(v)
                for v in (
                    row.month,
                    row.product,
                    row.tier,
                    row.currency,
                    row.orders,
                    row.gross_minor,
                    row.tax_minor,
                    row.refunded_minor,
                    row.net_minor,
                )
            ]
        )
    return buffer.getvalue()
