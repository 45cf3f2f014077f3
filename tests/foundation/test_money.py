"""The one parser of typed money: what people type, in the currency's minor units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from store.catalog.money import MAX_MINOR, format_amount, parse_amount, parse_decimal
from store.errors import ValidationFailed


@pytest.mark.parametrize(
    ("raw", "currency", "minor"),
    [
        ("49.00", "usd", 4900),
        (" 49 ", "usd", 4900),
        ("9.5", "eur", 950),
        ("1,500", "jpy", 1500),
        ("1 000.125", "kwd", 1000125),
        ("0", "usd", 0),
        ("", "usd", None),
        ("   ", "usd", None),
    ],
)
def test_amounts_as_people_type_them(raw: str, currency: str, minor: int | None) -> None:
    assert parse_amount(raw, currency) == minor
    if minor is not None:
        assert parse_amount(format_amount(minor, currency), currency) == minor


@pytest.mark.parametrize(
    ("raw", "currency", "message"),
    [
        ("abc", "usd", "Enter the price as a number such as 49.00"),
        ("-1", "usd", "The price must be a positive number"),
        ("NaN", "usd", "The price must be a positive number"),
        ("Infinity", "usd", "The price must be a positive number"),
        ("1.001", "usd", "Use at most 2 decimals for USD"),
        ("1.5", "jpy", "Use at most 0 decimals for JPY"),
        (str(MAX_MINOR), "usd", "The price is too large"),
    ],
)
def test_refused_amounts_say_why(raw: str, currency: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_amount(raw, currency, what="The price", field="price", code="bad_price")
    assert caught.value.detail == message
    assert (caught.value.field, caught.value.code) == ("price", "bad_price")


def test_decimal_without_a_currency() -> None:
    assert parse_decimal("12.50") == Decimal("12.50")
    assert parse_decimal("") is None
    with pytest.raises(ValidationFailed):
        parse_decimal("-0.01")
