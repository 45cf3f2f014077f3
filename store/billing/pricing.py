"""Prices: the billing kinds of tiers, tax rules, and the one quote every charge comes from.

``quote(tier, buyer, coupon, quantity, when)`` is the only place where an amount a buyer pays
is computed. Checkout pages and their templates show it, orders and subscriptions copy it,
both gateways charge it (Stripe: the PaymentIntent amount, or the plan plus the tax rate on
the subscription) and the sales report adds up what was recorded from it.

Rules:
- Amounts are integers of the currency's minor unit (0, 2 or 3 decimals: JPY, USD, KWD).
- subtotal = unit amount * quantity; discount <= subtotal; net = subtotal - discount;
  total = net + tax. Prices are before tax (tax is added on top).
- Tax is charged on the net (discounted) amount, computed per invoice line as the gateway's
  tax rates compute it: the price line's tax less the discount line's tax, each rounded half
  up to the minor unit. Without a discount that is the net times the rate, rounded once;
  with one it is within one minor unit of it, and always what the gateway charges.
- The tax rate is the operator's rate for the buyer's country (``TaxTable``), else the default
  rate. A business buyer in another EU country than the store's, with a VAT id of valid
  format, pays no tax (reverse charge; the receipt says so).
- A recurring tier with a trial: nothing is due now; the total is first charged at the trial
  end (``first_charge_at``), unless the buyer is not eligible for a trial.
- A coupon (``CouponTerms``) takes a percentage or an amount off the subtotal; its duration
  (``once``, ``repeating`` for N months, ``forever``) says which charges it covers
  (``CouponTerms.charges``): ``once`` the first charge, ``repeating`` the charges of its
  first N months (monthly: N charges; yearly: one per started year), ``forever`` every
  charge. A trial is not a charge: the first charge is the one at the trial's end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Protocol

from store.catalog.money import currency_exponent
from store.catalog.periods import BillingKind, Interval
from store.errors import ValidationFailed

# --- tax ---------------------------------------------------------------------------------

EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)
# The shape of each EU VAT id after its country prefix (Greece's prefix is EL).
_VAT_FORMATS = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "EL": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d[A-Z0-9+*]\d{5}[A-Z]{1,2}",
    "IT": r"\d{11}",
    "LT": r"(\d{9}|\d{12})",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"\d{2,10}",
    "SE": r"\d{12}",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
}
_COUNTRY = re.compile(r"^[A-Z]{2}$")
VAT_ID_MAX = 32  # the orders' and subscriptions' column
_RATE_LIMIT = Decimal(100)


def normalize_country(value: str | None) -> str | None:
    """``" de "`` → ``"DE"``; empty → None; anything but two letters is refused."""
    text = (value or "").strip().upper()
    if not text:
        return None
    if not _COUNTRY.match(text):
        raise ValidationFailed(
            "Choose a country (a two-letter ISO code such as DE or US)",
            code="bad_country",
            field="country",
        )
    return text


def normalize_vat_id(value: str | None) -> str | None:
    """Upper case, without spaces, dots and dashes; empty → None; longer than an order keeps
    (32 characters) is refused."""
    text = re.sub(r"[\s.\-]", "", value or "").upper()
    if len(text) > VAT_ID_MAX:
        raise ValidationFailed(
            f"A VAT id has at most {VAT_ID_MAX} characters (without spaces, dots and dashes)",
            code="bad_vat_id",
            field="vat_id",
        )
    return text or None


def vat_id_valid_format(vat_id: str, country: str) -> bool:
    """Whether an EU VAT id has the format of ``country``'s (not whether it is registered)."""
    prefix = "EL" if country == "GR" else country
    pattern = _VAT_FORMATS.get(prefix)
    if pattern is None or not vat_id.startswith(prefix):
        return False
    return re.fullmatch(pattern, vat_id[len(prefix) :]) is not None


def parse_rate(value: object) -> Decimal:
    """A tax rate in percent (``19``, ``8.875``): 0 to 100, at most 4 decimals (as Stripe)."""
    try:
        rate = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationFailed(f"Tax rate {value!r} is not a number", code="bad_tax_rate") from None
    if (
        not rate.is_finite()
        or not 0 <= rate <= _RATE_LIMIT
        or rate != rate.quantize(Decimal("0.0001"))
    ):
        raise ValidationFailed(
            f"Tax rate {value!r} must be 0 to 100 percent with at most 4 decimals",
            code="bad_tax_rate",
        )
    if not rate:
        return Decimal(0)
    rate = rate.normalize()
    # 20, not 2E+1 (how normalize writes a round rate), wherever the rate is shown.
    return rate.quantize(Decimal(1)) if rate == rate.to_integral_value() else rate


@dataclass(frozen=True)
class TaxTable:
    """The operator's tax rates: a default, and rates per buyer country (ISO 3166 alpha-2)."""

    default_rate: Decimal = Decimal(0)
    rates: Mapping[str, Decimal] = field(default_factory=dict)
    label: str = "Tax"
    # The store's own country: EU business buyers there pay tax (no reverse charge).
    home_country: str | None = None

    @property
    def configured(self) -> bool:
        """Some buyer pays tax: checkout then asks for the buyer's country."""
        return self.default_rate > 0 or any(rate > 0 for rate in self.rates.values())

    def rate_for(self, country: str | None) -> Decimal:
        if country is not None and country in self.rates:
            return self.rates[country]
        return self.default_rate

    @classmethod
    def parse(
        cls,
        spec: str,
        *,
        default_rate: Decimal = Decimal(0),
        label: str = "Tax",
        home_country: str | None = None,
    ) -> TaxTable:
        """``"DE=19, FR=20, *=0"``: rates per country; ``*`` is the default."""
        rates: dict[str, Decimal] = {}
        for part in filter(None, (p.strip() for p in spec.replace(";", ",").split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValidationFailed(
                    f"Tax rate {part!r}: write COUNTRY=PERCENT, such as DE=19", code="bad_tax_rate"
                )
            key = key.strip().upper()
            if key == "*":
                default_rate = parse_rate(value)
                continue
            country = normalize_country(key)
            assert country is not None
            rates[country] = parse_rate(value)
        return cls(
            default_rate=default_rate,
            rates=rates,
            label=label,
            home_country=normalize_country(home_country),
        )


@dataclass(frozen=True)
class Buyer:
    """Who buys, as far as the price is concerned."""

    country: str | None = None
    vat_id: str | None = None
    # A trial is offered only to buyers who have not had one for this product.
    trial_eligible: bool = True

    @property
    def business(self) -> bool:
        return self.vat_id is not None


@dataclass(frozen=True)
class TaxDecision:
    rate: Decimal
    label: str
    reverse_charge: bool = False


def tax_decision(table: TaxTable, buyer: Buyer) -> TaxDecision:
    """The rate a buyer pays (see the module docstring for the reverse charge)."""
    country = buyer.country
    if (
        country in EU_COUNTRIES
        and buyer.vat_id is not None
        and country != table.home_country
        and vat_id_valid_format(buyer.vat_id, country)
    ):
        return TaxDecision(Decimal(0), table.label, reverse_charge=True)
    return TaxDecision(table.rate_for(country), table.label)


def tax_on(net_minor: int, rate: Decimal) -> int:
    """Tax on a net amount in minor units, rounded half up to the minor unit."""
    if net_minor <= 0 or rate <= 0:
        return 0
    return int((Decimal(net_minor) * rate / _RATE_LIMIT).quantize(Decimal(1), ROUND_HALF_UP))


# --- coupons -----------------------------------------------------------------------------

COUPON_DURATIONS = ("once", "repeating", "forever")


@dataclass(frozen=True)
class CouponTerms:
    """What a coupon takes off: a percentage, or an amount in one currency.

    Coupons themselves (codes, limits, who may use them) are kept elsewhere; they reach the
    quote as these terms, so every price shown and charged applies them the same way.
    """

    code: str
    percent_off: Decimal | None = None
    amount_off_minor: int | None = None
    currency: str | None = None  # of ``amount_off_minor``
    duration: str = "once"  # once | repeating | forever
    duration_months: int | None = None  # for repeating

    def charges(self, interval: Interval | None) -> int | None:
        """How many charges the coupon takes its discount off; None: every charge."""
        if self.duration == "forever":
            return None
        if self.duration == "repeating" and interval is not None:
            months = max(1, self.duration_months or 1)
            return months if interval is Interval.MONTH else -(-months // 12)
        return 1

    def covers(self, charge_index: int, interval: Interval | None) -> bool:
        """Whether the charge numbered ``charge_index`` (0: the first) is discounted."""
        count = self.charges(interval)
        return count is None or 0 <= charge_index < count

    def discount_minor(self, subtotal_minor: int, currency: str) -> int:
        """The discount on a subtotal: never negative, never more than the subtotal."""
        if self.percent_off is not None:
            off = (Decimal(subtotal_minor) * self.percent_off / _RATE_LIMIT).quantize(
                Decimal(1), ROUND_HALF_UP
            )
            return max(0, min(int(off), subtotal_minor))
        if self.amount_off_minor is not None:
            if (self.currency or "").lower() != currency.lower():
                raise ValidationFailed(
                    f"Coupon {self.code} is for {str(self.currency).upper()} prices",
                    code="coupon_currency",
                )
            return max(0, min(self.amount_off_minor, subtotal_minor))
        return 0


# --- the quote ---------------------------------------------------------------------------


class Priced(Protocol):
    """What the quote needs of a tier (``store.catalog.models.Tier`` has it)."""

    @property
    def billing(self) -> BillingKind | str: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def trial_days(self) -> int: ...


@dataclass(frozen=True)
class Quote:
    """What a buyer pays for a tier: per charge, and when the first charge happens."""

    kind: BillingKind
    currency: str
    quantity: int
    unit_amount_minor: int
    subtotal_minor: int
    discount_minor: int
    tax_minor: int
    total_minor: int
    tax_rate: Decimal
    tax_label: str
    reverse_charge: bool
    interval: Interval | None
    trial_days: int
    trial_end: datetime | None
    first_charge_at: datetime
    coupon: CouponTerms | None = None

    @property
    def net_minor(self) -> int:
        """What the seller earns per charge before tax: subtotal less discount."""
        return self.subtotal_minor - self.discount_minor

    @property
    def trial(self) -> bool:
        return self.trial_end is not None

    @property
    def due_now_minor(self) -> int:
        """Charged at checkout: the total, or nothing while a trial runs."""
        return 0 if self.trial else self.total_minor

    @property
    def due_now_tax_minor(self) -> int:
        return 0 if self.trial else self.tax_minor

    @property
    def due_now_net_minor(self) -> int:
        return 0 if self.trial else self.net_minor

    @property
    def recurring(self) -> bool:
        return self.interval is not None

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)


@dataclass(frozen=True)
class Shown:
    """The price a buyer was shown and agreed to: the total per charge
    (:attr:`Quote.total_minor`) and what is charged today (:attr:`Quote.due_now_minor`, 0
    while a trial runs). A checkout that carries it charges exactly that, or nothing."""

    total_minor: int
    due_now_minor: int

    def matches(self, quote: Quote) -> bool:
        return (self.total_minor, self.due_now_minor) == (quote.total_minor, quote.due_now_minor)


def shown_price(total_minor: int | str | None, due_now_minor: int | str | None) -> Shown | None:
    """The price a checkout says its buyer was shown (API integers, or a form's hidden
    inputs): both amounts, or none to hold to when neither is given."""
    if total_minor in (None, "") and due_now_minor in (None, ""):
        return None
    amounts = []
    for value in (total_minor, due_now_minor):
        text = str(value if value is not None else "").strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ValidationFailed(
                "Give the price shown as expected_total_minor and expected_due_now_minor "
                "(whole minor units, from the quote)",
                code="bad_expected_price",
                field=("expected_total_minor", "expected_due_now_minor"),
            )
        amounts.append(int(text))
    return Shown(total_minor=amounts[0], due_now_minor=amounts[1])


MAX_QUANTITY = 1_000_000


def quote(
    tier: Priced,
    buyer: Buyer | None = None,
    coupon: CouponTerms | None = None,
    quantity: int = 1,
    when: datetime | None = None,
    *,
    taxes: TaxTable | None = None,
) -> Quote:
    """The price of ``quantity`` units of a paid tier for ``buyer`` at ``when`` (see module)."""
    kind = BillingKind(tier.billing)
    if not kind.paid:
        raise ValidationFailed("This tier is free: use its Get button", code="tier_is_free")
    if (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not 1 <= quantity <= (MAX_QUANTITY)
    ):
        raise ValidationFailed(
            f"The quantity must be a whole number from 1 to {MAX_QUANTITY}",
            code="bad_quantity",
            field="quantity",
        )
    buyer = buyer or Buyer()
    taxes = taxes or TaxTable()
    when = when or datetime.now(UTC)
    currency = tier.currency.lower()
    subtotal = tier.amount_minor * quantity
    discount = coupon.discount_minor(subtotal, currency) if coupon is not None else 0
    decision = tax_decision(taxes, buyer)
    tax = tax_on(subtotal, decision.rate) - tax_on(discount, decision.rate)
    trial_days = tier.trial_days if kind.recurring and buyer.trial_eligible else 0
    trial_end = when + timedelta(days=trial_days) if trial_days > 0 else None
    return Quote(
        kind=kind,
        currency=currency,
        quantity=quantity,
        unit_amount_minor=tier.amount_minor,
        subtotal_minor=subtotal,
        discount_minor=discount,
        tax_minor=tax,
        total_minor=subtotal - discount + tax,
        tax_rate=decision.rate,
        tax_label=decision.label,
        reverse_charge=decision.reverse_charge,
        interval=kind.interval,
        trial_days=trial_days if trial_end else 0,
        trial_end=trial_end,
        first_charge_at=trial_end or when,
        coupon=coupon,
    )


def refund_tax(refunded_minor: int, total_minor: int, tax_minor: int) -> int:
    """The tax part of ``refunded_minor`` of a charge (proportional, rounded half up); a full
    refund gives back all of the tax."""
    if total_minor <= 0 or refunded_minor <= 0:
        return 0
    if refunded_minor >= total_minor:
        return tax_minor
    share = Decimal(refunded_minor) * tax_minor / total_minor
    return min(tax_minor, int(share.quantize(Decimal(1), ROUND_HALF_UP)))


# --- plan changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Proration:
    """What changing a subscription's plan at ``when`` costs.

    - ``credit``: the unused part of the current period, as a share of what was charged for
      it (``current``'s net and tax, each scaled and rounded half up, so never more than was
      paid).
    - ``charge``: the new plan (``target``, quoted with the same buyer, coupon and tax rules
      as any charge) for the rest of the current period; or, when the interval changes, one
      whole new period starting at ``when``.
    - Due now: the charge less the credit, never below zero. A credit larger than the charge
      (a downgrade) is carried to the next invoices (``carried_*``), as Stripe does.
    """

    current: Quote
    target: Quote
    when: datetime
    period_start: datetime
    period_end: datetime
    new_period_end: datetime
    interval_change: bool
    credit_net_minor: int
    credit_tax_minor: int
    charge_net_minor: int
    charge_tax_minor: int

    @property
    def currency(self) -> str:
        return self.target.currency

    @property
    def credit_minor(self) -> int:
        return self.credit_net_minor + self.credit_tax_minor

    @property
    def charge_minor(self) -> int:
        return self.charge_net_minor + self.charge_tax_minor

    @property
    def due_now_minor(self) -> int:
        """The charge less the credit, never below zero."""
        return max(0, self.charge_minor - self.credit_minor)

    @property
    def due_now_tax_minor(self) -> int:
        return max(0, min(self.due_now_minor, self.charge_tax_minor - self.credit_tax_minor))

    @property
    def due_now_net_minor(self) -> int:
        return self.due_now_minor - self.due_now_tax_minor

    @property
    def carried_minor(self) -> int:
        """Credit left for the next invoices (nothing is due now then)."""
        return max(0, self.credit_minor - self.charge_minor)

    @property
    def carried_tax_minor(self) -> int:
        return max(0, min(self.carried_minor, self.credit_tax_minor - self.charge_tax_minor))

    @property
    def carried_net_minor(self) -> int:
        return self.carried_minor - self.carried_tax_minor

    @property
    def upgrade(self) -> bool:
        """Something is charged now (else the change is paid by the credit)."""
        return self.due_now_minor > 0

    @property
    def unused_fraction(self) -> Decimal:
        return _unused(self.period_start, self.period_end, self.when)


def _unused(start: datetime, end: datetime, when: datetime) -> Decimal:
    """The share of the period ``start`` to ``end`` still to come at ``when`` (0 to 1)."""
    total = (end - start).total_seconds()
    if total <= 0 or when >= end:
        return Decimal(0)
    if when <= start:
        return Decimal(1)
    return Decimal(str((end - when).total_seconds())) / Decimal(str(total))


def _share(amount_minor: int, fraction: Decimal) -> int:
    """``amount_minor`` times ``fraction``, rounded half up; never more than the amount."""
    if amount_minor <= 0 or fraction <= 0:
        return 0
    part = int((Decimal(amount_minor) * fraction).quantize(Decimal(1), ROUND_HALF_UP))
    return min(part, amount_minor)


def prorate(
    current: Quote,
    target_tier: Priced,
    *,
    period_start: datetime,
    period_end: datetime,
    when: datetime,
    buyer: Buyer | None = None,
    coupon: CouponTerms | None = None,
    quantity: int | None = None,
    taxes: TaxTable | None = None,
) -> Proration:
    """The price of moving from the plan charged as ``current`` for the period
    ``period_start`` to ``period_end`` to ``target_tier`` at ``when`` (see ``Proration``).

    ``target_tier`` is quoted by :func:`quote` (no trial: the subscription has started), so
    its tax and coupon follow the same rules as any charge.
    """
    if period_end <= period_start:
        raise ValidationFailed("The current period has no length", code="bad_period")
    if not period_start <= when < period_end:
        raise ValidationFailed(
            "A plan can only be changed during its current period", code="period_over"
        )
    kind = BillingKind(target_tier.billing)
    if not kind.recurring:
        raise ValidationFailed(
            "Only a monthly or yearly tier can replace a subscription's plan",
            code="target_not_recurring",
            field="tier",
        )
    if target_tier.currency.lower() != current.currency:
        raise ValidationFailed(
            f"The new plan must be priced in {current.currency.upper()}",
            code="currency_change",
            field="tier",
        )
    buyer = buyer or Buyer()
    buyer = Buyer(country=buyer.country, vat_id=buyer.vat_id, trial_eligible=False)
    target = quote(target_tier, buyer, coupon, quantity or current.quantity, when, taxes=taxes)
    unused = _unused(period_start, period_end, when)
    interval_change = target.interval is not current.interval
    if interval_change:
        assert target.interval is not None
        charge_net, charge_tax = target.net_minor, target.tax_minor
        new_end = target.interval.add(when)
    else:
        charge_net, charge_tax = _share(target.net_minor, unused), _share(target.tax_minor, unused)
        new_end = period_end
    return Proration(
        current=current,
        target=target,
        when=when,
        period_start=period_start,
        period_end=period_end,
        new_period_end=new_end,
        interval_change=interval_change,
        credit_net_minor=_share(current.net_minor, unused),
        credit_tax_minor=_share(current.tax_minor, unused),
        charge_net_minor=charge_net,
        charge_tax_minor=charge_tax,
    )
