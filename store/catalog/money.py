"""Money: integer minor units plus an ISO 4217 currency, as payment gateways count them."""

from __future__ import annotations

from decimal import Decimal

from store.errors import ValidationFailed

# Currencies whose minor unit is not 1/100.
_EXPONENTS = {
    **dict.fromkeys("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split(), 0),
    **dict.fromkeys("bhd jod kwd omr tnd".split(), 3),
}
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹"}


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in ``currency`` (2 unless listed otherwise)."""
    return _EXPONENTS.get(currency.lower(), 2)


def to_minor(amount: Decimal, currency: str) -> int:
    """``49.00`` usd → 4900; a fraction finer than the currency's minor unit is refused."""
    exponent = currency_exponent(currency)
    minor = amount.scaleb(exponent)
    if not amount.is_finite() or minor != minor.to_integral_value():
        raise ValidationFailed(f"Use at most {exponent} decimals for {currency.upper()}")
    return int(minor)


def format_amount(amount_minor: int, currency: str) -> str:
    """4900 usd → ``49.00`` (no symbol, no grouping: for forms, CSV and the CLI)."""
    exponent = currency_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def format_money(amount_minor: int, currency: str) -> str:
    """4900 usd → ``$49.00``; -500 usd → ``-$5.00``; 4900 chf → ``49.00 CHF``."""
    exponent = currency_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    number = f"{Decimal(abs(amount_minor)).scaleb(-exponent):,.{exponent}f}"
    symbol = _SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {currency.upper()}"
