"""The quote: amounts in 0-, 2- and 3-decimal currencies, rounding, tax rules, coupons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.billing.config import BillingSettings
from store.billing.pricing import (
    BillingKind,
    Buyer,
    CouponTerms,
    Interval,
    TaxTable,
    normalize_vat_id,
    parse_rate,
    quote,
    tax_on,
    vat_id_valid_format,
)
from store.catalog.money import currency_exponent
from store.errors import ValidationFailed

WHEN = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


@dataclass
class T:
    billing: str
    amount_minor: int
    currency: str = "usd"
    trial_days: int = 0


EU = TaxTable.parse("DE=19,FR=20,AT=20,*=0", home_country="DE", label="VAT")


@pytest.mark.parametrize(
    ("currency", "amount", "rate", "tax"),
    [
        ("usd", 9900, "19", 1881),  # 99.00 USD at 19% = 18.81
        ("jpy", 1099, "10", 110),  # 0 decimals: 109.9 yen rounds half up to 110
        ("jpy", 1005, "5", 50),  # 50.25 → 50
        ("kwd", 12345, "5", 617),  # 3 decimals: 12.345 KWD at 5% = 0.61725 → 0.617
        ("kwd", 10, "5", 1),  # 0.0005 KWD rounds half up to 0.001
        ("usd", 50, "1", 1),  # 0.5 cent rounds up
        ("usd", 49, "1", 0),  # 0.49 cent rounds down
        ("usd", 1000, "8.875", 89),  # 88.75 → 89
        ("usd", 1000, "0", 0),
    ],
)
def test_tax_rounds_half_up_in_the_minor_unit(
    currency: str, amount: int, rate: str, tax: int
) -> None:
    q = quote(T("one_time", amount, currency), taxes=TaxTable(default_rate=Decimal(rate)))
    assert (q.subtotal_minor, q.tax_minor, q.total_minor) == (amount, tax, amount + tax)
    assert q.currency == currency and q.exponent == currency_exponent(currency)


def test_one_time_quote_is_due_now() -> None:
    q = quote(T("one_time", 4900), when=WHEN)
    assert q.kind is BillingKind.ONE_TIME and q.interval is None
    assert (q.due_now_minor, q.first_charge_at, q.trial) == (4900, WHEN, False)


def test_subscription_with_trial_charges_at_trial_end() -> None:
    q = quote(T("month", 4900, trial_days=14), when=WHEN, taxes=TaxTable(default_rate=Decimal(10)))
    assert q.interval is Interval.MONTH and q.trial_days == 14
    assert q.trial_end == WHEN + timedelta(days=14) == q.first_charge_at
    assert (q.due_now_minor, q.total_minor, q.tax_minor) == (0, 5390, 490)
    assert q.due_now_tax_minor == 0 and q.due_now_net_minor == 0


def test_no_trial_for_a_buyer_who_had_one() -> None:
    q = quote(T("year", 49000, trial_days=14), Buyer(trial_eligible=False), when=WHEN)
    assert (q.trial, q.due_now_minor, q.first_charge_at) == (False, 49000, WHEN)


def test_trial_days_of_a_one_time_tier_are_ignored() -> None:
    assert not quote(T("one_time", 100, trial_days=7)).trial


def test_free_tiers_have_no_quote_and_quantity_is_checked() -> None:
    with pytest.raises(ValidationFailed) as free:
        quote(T("free", 0))
    assert free.value.code == "tier_is_free"
    for bad in (0, -1, 1_000_001, True):
        with pytest.raises(ValidationFailed):
            quote(T("one_time", 100), quantity=bad)  # type: ignore[arg-type]
    assert quote(T("one_time", 150), quantity=3).subtotal_minor == 450


def test_tax_by_country_and_reverse_charge() -> None:
    tier = T("one_time", 10000, "eur")
    assert quote(tier, Buyer(country="DE"), taxes=EU).tax_minor == 1900
    assert quote(tier, Buyer(country="FR"), taxes=EU).tax_minor == 2000
    assert quote(tier, Buyer(country="US"), taxes=EU).tax_minor == 0
    assert quote(tier, taxes=EU).tax_minor == 0  # no country: the default rate
    # A French business with a valid-format VAT id: reverse charge, no tax.
    business = quote(tier, Buyer(country="FR", vat_id="FR12345678901"), taxes=EU)
    assert (business.tax_minor, business.reverse_charge, business.tax_rate) == (0, True, 0)
    # The same business in the store's own country pays VAT.
    home = quote(tier, Buyer(country="DE", vat_id="DE123456789"), taxes=EU)
    assert (home.tax_minor, home.reverse_charge) == (1900, False)
    # A VAT id of the wrong format (or another country's) does not make a reverse charge.
    for vat_id in ("FR123", "DE123456789", "XX12345678901"):
        bad = quote(tier, Buyer(country="FR", vat_id=vat_id), taxes=EU)
        assert (bad.tax_minor, bad.reverse_charge) == (2000, False)


def test_vat_id_formats() -> None:
    assert normalize_vat_id(" de 123.456-789 ") == "DE123456789"
    assert vat_id_valid_format("DE123456789", "DE")
    assert vat_id_valid_format("EL123456789", "GR")
    assert vat_id_valid_format("NL123456789B01", "NL")
    assert vat_id_valid_format("ATU12345678", "AT")
    assert not vat_id_valid_format("AT12345678", "AT")
    assert not vat_id_valid_format("DE12345678", "DE")
    assert not vat_id_valid_format("US123456789", "US")


def test_tax_table_parsing_and_settings() -> None:
    table = TaxTable.parse(" de=19 ; fr = 20.5, *=7 ")
    assert table.rates == {"DE": Decimal(19), "FR": Decimal("20.5")}
    assert table.default_rate == 7 and table.configured
    assert not TaxTable().configured
    for bad in ("DE", "DEU=19", "DE=x", "DE=101", "DE=-1", "DE=1.00001"):
        with pytest.raises(ValidationFailed):
            TaxTable.parse(bad)
    assert parse_rate("8.8750") == Decimal("8.875")
    settings = BillingSettings(
        _env_file=None,  # type: ignore[call-arg]
        tax_rate_bps=500,
        tax_rates="DE=19",
        tax_home_country="de",
        tax_label="VAT",
    )
    assert settings.taxes.rate_for("DE") == 19 and settings.taxes.rate_for("US") == 5
    assert settings.taxes.home_country == "DE" and settings.taxes.label == "VAT"
    with pytest.raises(ValueError, match="COUNTRY=PERCENT"):
        BillingSettings(_env_file=None, tax_rates="19")  # type: ignore[call-arg]


def test_coupons_percent_and_amount() -> None:
    tier = T("one_time", 9999)
    table = TaxTable(default_rate=Decimal(10))
    half = quote(tier, coupon=CouponTerms("HALF", percent_off=Decimal(50)), taxes=table)
    # 49.995 → 50.00 off (half up); tax on the net 49.99.
    assert (half.discount_minor, half.net_minor, half.tax_minor) == (5000, 4999, 500)
    assert half.total_minor == 5499
    off = CouponTerms("TEN", amount_off_minor=1000, currency="usd")
    assert quote(tier, coupon=off).total_minor == 8999
    big = CouponTerms("ALL", amount_off_minor=10**9, currency="usd")
    assert quote(tier, coupon=big, taxes=table).total_minor == 0
    with pytest.raises(ValidationFailed) as wrong:
        quote(T("one_time", 100, "eur"), coupon=off)
    assert wrong.value.code == "coupon_currency"


def test_interval_add_clamps_to_the_month_end() -> None:
    assert Interval.MONTH.add(WHEN) == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    assert Interval.MONTH.add(datetime(2028, 1, 31, tzinfo=UTC)) == datetime(
        2028, 2, 29, tzinfo=UTC
    )
    assert Interval.YEAR.add(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2029, 2, 28, tzinfo=UTC)
    assert Interval.MONTH.add(datetime(2026, 12, 15, tzinfo=UTC), 2) == datetime(
        2027, 2, 15, tzinfo=UTC
    )


def test_billing_kinds() -> None:
    assert BillingKind.parse("year") is BillingKind.YEAR
    assert BillingKind.YEAR.interval is Interval.YEAR and BillingKind.ONE_TIME.interval is None
    assert [k.recurring for k in BillingKind] == [False, False, True, True]
    with pytest.raises(ValidationFailed) as bad:
        BillingKind.parse("weekly")
    assert bad.value.code == "bad_billing"


# --- properties ---------------------------------------------------------------------------

currencies = st.sampled_from(["usd", "eur", "jpy", "krw", "kwd", "bhd", "chf"])
rates = st.decimals(min_value=0, max_value=100, places=4, allow_nan=False, allow_infinity=False)
coupons = st.one_of(
    st.none(),
    st.builds(
        CouponTerms,
        code=st.just("C"),
        percent_off=st.decimals(min_value=0, max_value=100, places=2),
    ),
    st.integers(min_value=0, max_value=10**8).map(
        lambda n: CouponTerms("C", amount_off_minor=n, currency="usd")
    ),
)


# A loaded machine generates inputs slowly; the property, not the generation speed, is tested.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    amount=st.integers(min_value=1, max_value=10**9),
    quantity=st.integers(min_value=1, max_value=1000),
    rate=rates,
    currency=currencies,
    kind=st.sampled_from(["one_time", "month", "year"]),
    trial=st.integers(min_value=0, max_value=365),
)
def test_quote_invariants(
    amount: int, quantity: int, rate: Decimal, currency: str, kind: str, trial: int
) -> None:
    q = quote(
        T(kind, amount, currency, trial),
        quantity=quantity,
        when=WHEN,
        taxes=TaxTable(default_rate=rate),
    )
    assert q.subtotal_minor == amount * quantity
    assert q.total_minor == q.net_minor + q.tax_minor
    # The tax is the exact tax rounded to the nearest minor unit, halves up.
    exact = Decimal(q.net_minor) * rate / 100
    assert abs(Decimal(q.tax_minor) - exact) <= Decimal("0.5")
    assert Decimal(q.tax_minor) - exact < Decimal("0.5") or exact % 1 == Decimal("0.5")
    assert tax_on(q.net_minor, rate) == q.tax_minor
    assert q.due_now_minor in (0, q.total_minor)
    assert (q.due_now_minor == 0) == (kind != "one_time" and trial > 0)
    assert q.first_charge_at >= WHEN


@given(amount=st.integers(min_value=1, max_value=10**9), coupon=coupons, rate=rates)
def test_discounts_never_exceed_the_subtotal(
    amount: int, coupon: CouponTerms | None, rate: Decimal
) -> None:
    q = quote(T("one_time", amount), coupon=coupon, taxes=TaxTable(default_rate=rate))
    assert 0 <= q.discount_minor <= q.subtotal_minor
    assert q.net_minor >= 0 and q.tax_minor >= 0 and q.total_minor >= 0
    assert q.tax_minor <= q.net_minor


@given(rate=rates, a=st.integers(min_value=0, max_value=10**9), b=st.integers(0, 10**9))
def test_tax_is_monotonic(rate: Decimal, a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert tax_on(low, rate) <= tax_on(high, rate)


# --- coupons: properties of the one quote --------------------------------------------------

any_coupon = st.one_of(
    st.builds(
        CouponTerms,
        code=st.just("C"),
        percent_off=st.decimals(min_value="0.01", max_value=100, places=2),
        duration=st.sampled_from(["once", "repeating", "forever"]),
        duration_months=st.integers(min_value=1, max_value=120),
    ),
    st.builds(
        lambda n, cur, d: CouponTerms("C", amount_off_minor=n, currency=cur, duration=d),
        st.integers(min_value=1, max_value=10**10),
        currencies,
        st.sampled_from(["once", "forever"]),
    ),
)


@given(
    amount=st.integers(min_value=1, max_value=10**9),
    quantity=st.integers(min_value=1, max_value=500),
    coupon=any_coupon,
    rate=rates,
    currency=currencies,
    kind=st.sampled_from(["one_time", "month", "year"]),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_quote_with_coupons(
    amount: int, quantity: int, coupon: CouponTerms, rate: Decimal, currency: str, kind: str
) -> None:
    if coupon.amount_off_minor is not None:
        coupon = CouponTerms("C", amount_off_minor=coupon.amount_off_minor, currency=currency)
    tier = T(kind, amount, currency)
    taxes = TaxTable(default_rate=rate)
    full = quote(tier, quantity=quantity, when=WHEN, taxes=taxes)
    q = quote(tier, coupon=coupon, quantity=quantity, when=WHEN, taxes=taxes)
    # Never negative, never above the list price (before and after tax).
    assert 0 <= q.discount_minor <= q.subtotal_minor == full.subtotal_minor
    assert 0 <= q.net_minor <= full.net_minor and 0 <= q.tax_minor <= full.tax_minor
    assert 0 <= q.total_minor <= full.total_minor
    # Tax on the discounted amount: the price line's tax less the discount line's (as invoice
    # lines are taxed), within one minor unit of the rate times the net, none on nothing.
    assert q.tax_minor == tax_on(q.subtotal_minor, rate) - tax_on(q.discount_minor, rate)
    assert abs(Decimal(q.tax_minor) - Decimal(q.net_minor) * rate / 100) <= 1
    if q.net_minor == 0:
        assert q.tax_minor == 0
    # What a receipt prints adds up to what is charged: price, less discount, plus tax.
    assert q.subtotal_minor - q.discount_minor + q.tax_minor == q.total_minor
    assert q.net_minor + q.tax_minor == q.total_minor


@pytest.mark.parametrize(
    ("duration", "months", "interval", "charges"),
    [
        ("once", None, Interval.MONTH, 1),
        ("once", None, Interval.YEAR, 1),
        ("forever", None, Interval.YEAR, None),
        ("repeating", 3, Interval.MONTH, 3),
        ("repeating", 3, Interval.YEAR, 1),
        ("repeating", 12, Interval.YEAR, 1),
        ("repeating", 13, Interval.YEAR, 2),
        ("repeating", 3, None, 1),  # a one-time purchase has one charge
    ],
)
def test_coupon_duration_in_charges(
    duration: str, months: int | None, interval: Interval | None, charges: int | None
) -> None:
    coupon = CouponTerms("C", percent_off=Decimal(10), duration=duration, duration_months=months)
    assert coupon.charges(interval) == charges
    covered = [coupon.covers(i, interval) for i in range(20)]
    assert covered == [charges is None or i < charges for i in range(20)]
