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
from store.billing.models import Order, Refund
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
    "refunded_net_minor",
    "refunded_tax_minor",
    "net_minor",
    "discount_minor",
)


@dataclass
class SalesRow:
    """A month of one tier's sales in one currency. Sales count in the month they were paid,
    refunds in the month they were made; $0 orders (trial starts) are not sales."""

    month: str  # YYYY-MM (UTC)
    product: str  # repository
    product_title: str
    tier: str  # slug
    tier_name: str
    currency: str
    orders: int = 0
    gross_minor: int = 0  # what buyers paid, tax included
    tax_minor: int = 0
    refunded_net_minor: int = 0
    refunded_tax_minor: int = 0
    discount_minor: int = 0  # taken off by coupons (gross is after it)

    @property
    def refunded_minor(self) -> int:
        return self.refunded_net_minor + self.refunded_tax_minor

    @property
    def net_minor(self) -> int:
        """Revenue: gross less tax less the net part of refunds."""
        return self.gross_minor - self.tax_minor - self.refunded_net_minor


def sales_of(
    session: Session,
    *,
    actor: Account,
    org: Organization,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[SalesRow]:
    """Sales and refunds of the organization's products (its owners, its finance role,
    admins)."""
    accounts.require_revenue(session, actor, org)
    since, until = _aware(since), _aware(until)
    paid = (
        select(Order)
        .join(Product, Product.id == Order.product_id)
        .where(
            Product.organization_id == org.id,
            Order.paid_at.is_not(None),
            Order.amount_minor + Order.tax_minor > 0,
        )
        .order_by(Order.paid_at)
    )
    refunds = (
        select(Refund)
        .join(Order, Order.id == Refund.order_id)
        .join(Product, Product.id == Order.product_id)
        .where(Product.organization_id == org.id)
        .order_by(Refund.created_at)
    )
    if since is not None:
        paid = paid.where(Order.paid_at >= since)
        refunds = refunds.where(Refund.created_at >= since)
    if until is not None:
        paid = paid.where(Order.paid_at < until)
        refunds = refunds.where(Refund.created_at < until)
    rows: dict[tuple[str, str, str, str], SalesRow] = {}

    def row_of(order: Order, at: datetime) -> SalesRow:
        key = (f"{at:%Y-%m}", order.product.repository, order.tier.slug, order.currency)
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
        return row

    for order in session.scalars(paid):
        assert order.paid_at is not None
        row = row_of(order, order.paid_at)
        row.orders += 1
        row.gross_minor += order.total_minor
        row.tax_minor += order.tax_minor
        row.discount_minor += order.discount_minor
    for refund in session.scalars(refunds):
        row = row_of(refund.order, refund.created_at)
        row.refunded_net_minor += refund.net_minor
        row.refunded_tax_minor += refund.tax_minor
    return sorted(
        rows.values(), key=lambda r: (r.month, r.product, r.tier, r.currency), reverse=True
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def totals(rows: list[SalesRow]) -> dict[str, dict[str, int]]:
    """Per currency: the sums of every column."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        t = out.setdefault(row.currency, dict.fromkeys(CSV_COLUMNS[4:], 0))
        for name in CSV_COLUMNS[4:]:
            t[name] += getattr(row, name)
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
                    row.refunded_net_minor,
                    row.refunded_tax_minor,
                    row.net_minor,
                    row.discount_minor,
                )
            ]
        )
    return buffer.getvalue()
