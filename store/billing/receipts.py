"""Receipts: numbered in sequence per seller, with the service period, seller and buyer
details and tax lines; shown as a page and as a PDF (``store.billing.pdf``).

Numbers: each selling organization counts its own receipts (``<SELLER>-000001``, ...). The
next number comes from one atomic upsert of the seller's counter row, in the transaction that
marks the order paid, so two payments at the same instant (two processes included) never get
the same number and a rolled-back payment uses none.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.billing import pdf, trials
from store.billing.models import Order, PlanChange, ReceiptSequence
from store.catalog.money import format_money


def next_number(session: Session, organization_id: uuid.UUID, slug: str) -> str:
    """The seller's next receipt number (see the module docstring)."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(ReceiptSequence).values(organization_id=organization_id, last_number=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["organization_id"],
        set_={"last_number": ReceiptSequence.last_number + 1},
    ).returning(ReceiptSequence.last_number)
    number = int(session.execute(stmt).scalar_one())
    return f"{slug.upper()}-{number:06d}"


@dataclass(frozen=True)
class Line:
    label: str
    amount: str
    strong: bool = False


@dataclass(frozen=True)
class Receipt:
    number: str
    test_mode: bool
    paid_at: datetime
    seller: list[str]
    buyer: list[str]
    service: str
    lines: list[Line]
    notes: list[str]


def _period(order: Order) -> str:
    if order.kind == "one_time":
        assert order.paid_at is not None
        return f"Perpetual license from {order.paid_at:%Y-%m-%d}"
    if order.period_start is not None and order.period_end is not None:
        return f"{order.period_start:%Y-%m-%d} to {order.period_end:%Y-%m-%d}"
    return "Subscription"


def _plan_change(order: Order) -> PlanChange | None:
    session = Session.object_session(order)
    if session is None or order.subscription_id is None:
        return None
    return session.scalar(select(PlanChange).where(PlanChange.order_id == order.id))


def build(order: Order, *, tax_label: str, store_url: str) -> Receipt:
    """Everything a receipt says about a paid order."""
    assert order.paid_at is not None and order.receipt_number is not None
    cur = order.currency
    org = order.product.organization
    seller = [org.name, f"Sold through {store_url}"]
    if org.website:
        seller.append(org.website)
    buyer = [order.account.display_name or order.account.username, order.account.email]
    if order.organization is not None:
        buyer.insert(0, order.organization.name)
    if order.tax_country:
        buyer.append(f"Country: {order.tax_country}")
    if order.vat_id:
        buyer.append(f"VAT id: {order.vat_id}")
    item = f"{order.product.title} - {order.tier.name}"
    if order.quantity > 1:
        seats = order.unit_seats
        item += f" ({order.quantity} × {seats} seats)" if seats else f" ({order.quantity} units)"
    subtotal = order.amount_minor + order.discount_minor
    lines = [Line(item, format_money(subtotal, cur))]
    change = _plan_change(order)
    if change is not None and change.charge_net_minor - change.credit_net_minor == subtotal:
        # A plan change: the new plan for the service period, less the unused time's credit.
        lines = [
            Line(f"{item} (plan change)", format_money(change.charge_net_minor, cur)),
            Line(
                f"Credit for unused time on {change.from_tier.name}",
                format_money(-change.credit_net_minor, cur),
            ),
        ]
    if order.discount_minor:
        label = f"Discount (coupon {order.coupon_code})" if order.coupon_code else "Discount"
        lines.append(Line(label, format_money(-order.discount_minor, cur)))
    if order.tax_minor or order.reverse_charge:
        label = f"{tax_label} ({order.tax_rate}%)"
        if order.reverse_charge:
            label += " - reverse charge: VAT to be accounted for by the customer"
        lines.append(Line(label, format_money(order.tax_minor, cur)))
    lines.append(Line("Total", format_money(order.total_minor, cur), strong=True))
    if order.refunded_minor:
        when = f" {order.refunded_at:%Y-%m-%d}" if order.refunded_at else ""
        lines.append(Line(f"Refunded{when}", format_money(-order.refunded_minor, cur)))
    notes = []
    first = trials.first_charge(order)
    if first is not None:
        if first.amount_minor is None:
            notes.append(
                f"Free trial until {first.trial_end:%Y-%m-%d}. It was canceled: it ends then "
                "without any charge."
            )
        else:
            notes.append(
                f"Free trial until {first.trial_end:%Y-%m-%d}. The first charge, "
                f"{format_money(first.amount_minor, first.currency)}, happens on "
                f"{first.trial_end:%Y-%m-%d} unless you cancel before."
            )
    return Receipt(
        number=order.receipt_number,
        test_mode=order.gateway == "test",
        paid_at=order.paid_at,
        seller=seller,
        buyer=buyer,
        service=_period(order),
        lines=lines,
        notes=notes,
    )


def to_pdf(receipt: Receipt) -> bytes:
    doc = pdf.Document()
    if receipt.test_mode:
        doc.line("TEST MODE - not a real payment", bold=True)
    doc.line(f"Receipt {receipt.number}", size=18, bold=True)
    doc.line(f"Paid {receipt.paid_at:%Y-%m-%d %H:%M} UTC")
    doc.gap()
    doc.line("Seller", bold=True)
    for text in receipt.seller:
        doc.line(text)
    doc.gap()
    doc.line("Billed to", bold=True)
    for text in receipt.buyer:
        doc.line(text)
    doc.gap()
    doc.line("Service period", receipt.service)
    doc.rule()
    for line in receipt.lines:
        doc.line(line.label, line.amount, bold=line.strong)
    doc.rule()
    for note in receipt.notes:
        doc.gap(4)
        doc.line(note, size=9)
    return doc.render(title=f"Receipt {receipt.number}")


def pdf_file(order: Order, *, tax_label: str, store_url: str) -> tuple[str, bytes] | None:
    """``(filename, PDF)`` of a paid order's receipt (mailed with the receipt notice)."""
    if order.receipt_number is None or order.paid_at is None:
        return None
    document = to_pdf(build(order, tax_label=tax_label, store_url=store_url))
    return f"receipt-{order.receipt_number}.pdf", document
