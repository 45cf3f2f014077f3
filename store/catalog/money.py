"""Money: integer minor units plus an ISO 4217 currency, as payment gateways count them."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from store.errors import ValidationFailed

# Currencies whose minor unit is not 1/100.
_EXPONENTS = {
    **dict.fromkeys("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split(), 0),
    **dict.fromkeys("bhd jod kwd omr tnd".split(), 3),
}
# The largest amount anyone may type, in minor units (a payment gateway's limit is lower).
MAX_MINOR = 10**12
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


def _lower(what: str) -> str:
    return what[:1].lower() + what[1:]


def parse_decimal(
    raw: str, *, what: str = "The amount", field: str | None = None, code: str | None = None
) -> Decimal | None:
    """An amount as people type it (``49.00``, ``1,500``, ``9.5``), 0 or more; None when
    blank. The one parser of typed money: pages, the API's text fields and the CLI."""
    cleaned = raw.strip().replace(",", "").replace(" ", "")
    if not cleaned:
        return None
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise ValidationFailed(
            f"Enter {_lower(what)} as a number such as 49.00", code=code, field=field
        ) from None
    if not amount.is_finite() or amount < 0:
        raise ValidationFailed(f"{what} must be a positive number", code=code, field=field)
    return amount


def parse_amount(
    raw: str,
    currency: str,
    *,
    what: str = "The amount",
    field: str | None = None,
    code: str | None = None,
) -> int | None:
    """A typed amount (``parse_decimal``) in ``currency``'s minor units: ``49.00`` usd → 4900,
    ``1,500`` jpy → 1500; None when blank. A fraction finer than the minor unit, or more
    than ``MAX_MINOR``, is refused."""
    amount = parse_decimal(raw, what=what, field=field, code=code)
    if amount is None:
        return None
    exponent = currency_exponent(currency)
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise ValidationFailed(
            f"Use at most {exponent} decimals for {currency.upper()}", code=code, field=field
        )
    if minor > MAX_MINOR:
        raise ValidationFailed(f"{what} is too large", code=code, field=field)
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
