"""Receipts: numbered in sequence per seller, with the service period, seller and buyer
details and tax lines, as a page and as a PDF."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.billing import orders, receipts
from store.billing.gateway import PaymentInput
from store.billing.models import Order
from store.billing.pricing import Buyer
from store.billing.runtime import Billing
from store.billing.test_gateway import CARD_DECLINE, CARD_SUCCESS
from tests.billing.conftest import Shop
from tests.factories import make_account, make_org, make_product, paid_tier, tier_of
from tests.web.helpers import HTML, login


def buy(session: Session, billing: Billing, tier, account, card: str = CARD_SUCCESS, **kw) -> Order:  # type: ignore[no-untyped-def]
    order = orders.start_checkout(session, billing, account=account, tier=tier, **kw)
    session.commit()
    orders.pay(session, billing, order=order, payment=PaymentInput(card_number=card))
    session.commit()
    session.refresh(order)
    return order


def test_numbers_run_in_sequence_per_seller(session: Session, billing: Billing, shop: Shop) -> None:
    other_org = make_org(session, shop.publisher)
    other = make_product(
        session, other_org, shop.publisher, tiers=[paid_tier("once", 500, "one_time")]
    )
    a1 = buy(session, billing, shop.one_time, shop.buyer)
    b1 = buy(session, billing, tier_of(other, "once"), shop.buyer)
    failed = buy(session, billing, shop.one_time, make_account(session), card=CARD_DECLINE)
    a2 = buy(session, billing, shop.monthly, make_account(session))
    seller_a, seller_b = shop.org.slug.upper(), other_org.slug.upper()
    assert a1.receipt_number == f"{seller_a}-000001"
    assert a2.receipt_number == f"{seller_a}-000002"  # a failed payment uses no number
    assert b1.receipt_number == f"{seller_b}-000001"
    assert failed.receipt_number is None
    assert receipts.next_number(session, shop.org.id, shop.org.slug) == f"{seller_a}-000003"


def _pdf_objects_are_where_the_xref_says(body: bytes) -> None:
    start = int(body.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    table = body[start:].split(b"\n")
    assert table[0] == b"xref"
    count = int(table[1].split()[1])
    for number in range(1, count):
        offset = int(table[2 + number][:10])
        assert body[offset:].startswith(b"%d 0 obj" % number)


def test_receipt_page_and_pdf(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    billing.settings = billing.settings.model_copy(
        update={"tax_rates": "DE=19", "tax_label": "VAT"}
    )
    assert billing.settings.taxes.rate_for("DE") == Decimal(19)
    org = make_org(session, shop.buyer, name="Buyer GmbH")
    order = buy(session, billing, shop.monthly, shop.buyer, org=org, buyer=Buyer(country="DE"))
    assert order.tax_minor == 931 and order.period_start and order.period_end
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/my/purchases/orders/{order.id}/receipt").text
    assert order.receipt_number in page  # type: ignore[operator]
    assert f"{order.period_start:%Y-%m-%d} to {order.period_end:%Y-%m-%d}" in page
    assert shop.org.name in page and "Buyer GmbH" in page and shop.buyer.email in page
    assert "VAT (19%)" in page and "$9.31" in page and "$58.31" in page

    r = client.get(f"/my/purchases/orders/{order.id}/receipt.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert f"receipt-{order.receipt_number}.pdf" in r.headers["content-disposition"]
    body = r.content
    assert body.startswith(b"%PDF-1.4") and body.rstrip().endswith(b"%%EOF")
    _pdf_objects_are_where_the_xref_says(body)
    texts = re.findall(rb"\((.*?)\) Tj", body)
    joined = b"\n".join(texts).decode("cp1252").replace("\\(", "(").replace("\\)", ")")
    for expected in (
        f"Receipt {order.receipt_number}",
        shop.org.name,
        "Buyer GmbH",
        shop.buyer.email,
        "Country: DE",
        f"{order.period_start:%Y-%m-%d} to {order.period_end:%Y-%m-%d}",
        "VAT (19%)",
        "$9.31",
        "$58.31",
        "TEST MODE",
    ):
        assert expected in joined, expected


def test_one_time_receipt_and_who_sees_it(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    order = buy(session, billing, shop.one_time, shop.buyer)
    unpaid = buy(session, billing, shop.monthly, make_account(session), card=CARD_DECLINE)
    client.headers.update(HTML)
    login(client, shop.buyer.username)
    page = client.get(f"/my/purchases/orders/{order.id}/receipt").text
    assert "Perpetual license from" in page
    assert client.get(f"/my/purchases/orders/{unpaid.id}/receipt.pdf").status_code == 404
    assert client.get(f"/my/purchases/orders/{uuid.uuid4()}/receipt.pdf").status_code == 404
    client.post("/logout", data={})
    stranger = make_account(session)
    session.commit()
    login(client, stranger.username)
    assert client.get(f"/my/purchases/orders/{order.id}/receipt.pdf").status_code == 404


def test_pdf_text_is_escaped_and_unencodable_characters_replaced() -> None:
    from store.billing import pdf

    doc = pdf.Document()
    doc.line("a (b) \\ c — 東京", "€1")
    body = doc.render(title="t")
    assert b"(a \\(b\\) \\\\ c \x97 ??) Tj" in body and b"(\x801) Tj" in body
    many = pdf.Document()
    for n in range(120):
        many.line(f"line {n}")
    assert b"/Count 3" in many.render()
