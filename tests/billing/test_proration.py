"""Plan changes priced by the one quote: credit for the unused part of the period, the new
plan for the rest of it (or a new period when the interval changes), tax and coupons as
``quote()`` applies them, in 0-, 2- and 3-decimal currencies."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.billing.pricing import Buyer, CouponTerms, Interval, TaxTable, prorate, quote
from store.errors import ValidationFailed

START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 3, 31, tzinfo=UTC)  # a 30-day period
HALF = START + timedelta(days=15)
DE = TaxTable.parse("DE=19,*=0", label="VAT")


@dataclass
class T:
    billing: str
    amount_minor: int
    currency: str = "usd"
    trial_days: int = 0


def test_upgrade_halfway_charges_half_the_difference() -> None:
    current = quote(T("month", 1000), when=START)
    p = prorate(current, T("month", 3000), period_start=START, period_end=END, when=HALF)
    assert (p.credit_net_minor, p.charge_net_minor) == (500, 1500)
    assert p.due_now_minor == 1000 and p.carried_minor == 0 and p.upgrade
    assert p.new_period_end == END and not p.interval_change
    assert p.unused_fraction == Decimal("0.5")


def test_downgrade_carries_the_credit() -> None:
    current = quote(T("month", 3000), when=START)
    p = prorate(current, T("month", 1000), period_start=START, period_end=END, when=HALF)
    assert p.due_now_minor == 0 and not p.upgrade
    assert p.carried_minor == 1000 and p.carried_net_minor == 1000


def test_tax_is_prorated_from_what_was_charged() -> None:
    buyer = Buyer(country="DE")
    current = quote(T("month", 1000), buyer, when=START, taxes=DE)
    assert current.tax_minor == 190
    p = prorate(
        current, T("month", 3000), period_start=START, period_end=END, when=HALF,
        buyer=buyer, taxes=DE,
    )  # fmt: skip
    assert (p.credit_tax_minor, p.charge_tax_minor) == (95, 285)
    assert (p.due_now_net_minor, p.due_now_tax_minor, p.due_now_minor) == (1000, 190, 1190)


def test_interval_change_charges_a_new_period_from_now() -> None:
    current = quote(T("month", 1000), when=START)
    p = prorate(current, T("year", 10000), period_start=START, period_end=END, when=HALF)
    assert p.interval_change
    assert p.charge_net_minor == 10000 and p.credit_net_minor == 500
    assert p.due_now_minor == 9500
    assert p.new_period_end == Interval.YEAR.add(HALF)


def test_year_to_month_leaves_credit_over() -> None:
    current = quote(T("year", 12000), when=START)
    year_end = Interval.YEAR.add(START)
    p = prorate(current, T("month", 1000), period_start=START, period_end=year_end, when=START)
    assert p.credit_net_minor == 12000 and p.charge_net_minor == 1000
    assert p.due_now_minor == 0 and p.carried_minor == 11000
    assert p.new_period_end == Interval.MONTH.add(START)


def test_zero_decimal_currency_rounds_half_up() -> None:
    current = quote(T("month", 1001, "jpy"), when=START)
    p = prorate(current, T("month", 2001, "jpy"), period_start=START, period_end=END, when=HALF)
    # 1001 * 0.5 = 500.5 -> 501; 2001 * 0.5 = 1000.5 -> 1001
    assert (p.credit_net_minor, p.charge_net_minor, p.due_now_minor) == (501, 1001, 500)
    assert p.currency == "jpy"


def test_three_decimal_currency() -> None:
    current = quote(T("month", 12345, "kwd"), when=START)
    third = START + timedelta(days=10)  # two thirds unused
    p = prorate(current, T("month", 23456, "kwd"), period_start=START, period_end=END, when=third)
    assert p.credit_net_minor == 8230  # 12345 * 2/3 = 8230.0
    assert p.charge_net_minor == 15637  # 23456 * 2/3 = 15637.33
    assert p.due_now_minor == 7407


def test_a_coupon_applies_to_the_new_plan_as_quote_does() -> None:
    coupon = CouponTerms(code="HALF", percent_off=Decimal(50), duration="forever")
    current = quote(T("month", 1000), coupon=coupon, when=START)
    p = prorate(
        current, T("month", 3000), period_start=START, period_end=END, when=HALF, coupon=coupon
    )
    assert p.target.discount_minor == 1500 and p.target.net_minor == 1500
    assert (p.credit_net_minor, p.charge_net_minor, p.due_now_minor) == (250, 750, 500)


def test_seats_quantity_carries_over() -> None:
    current = quote(T("month", 1000), quantity=3, when=START)
    p = prorate(current, T("month", 2000), period_start=START, period_end=END, when=HALF)
    assert p.target.quantity == 3 and p.due_now_minor == 1500


def test_bad_changes_are_refused() -> None:
    current = quote(T("month", 1000), when=START)
    cases = [
        (T("one_time", 1000), dict(when=HALF), "target_not_recurring"),
        (T("month", 1000, "eur"), dict(when=HALF), "currency_change"),
        (T("month", 2000), dict(when=END), "period_over"),
        (T("month", 2000), dict(when=START - timedelta(seconds=1)), "period_over"),
        (T("free", 0), dict(when=HALF), "target_not_recurring"),
    ]
    for tier, kw, code in cases:
        with pytest.raises(ValidationFailed) as err:
            prorate(current, tier, period_start=START, period_end=END, **kw)  # type: ignore[arg-type]
        assert err.value.code == code, tier


def test_no_trial_on_a_change() -> None:
    current = quote(T("month", 1000), when=START)
    p = prorate(current, T("month", 2000, trial_days=14), period_start=START, period_end=END,
                when=HALF)  # fmt: skip
    assert not p.target.trial and p.due_now_minor == 500


# --- properties --------------------------------------------------------------------------

amounts = st.integers(min_value=0, max_value=10_000_000)
rates = st.sampled_from([Decimal(0), Decimal(7), Decimal("8.875"), Decimal(19), Decimal(25)])
currencies = st.sampled_from(["usd", "jpy", "kwd"])
kinds = st.sampled_from(["month", "year"])
offsets = st.floats(min_value=0, max_value=0.999999)
percent = st.one_of(st.none(), st.integers(min_value=1, max_value=100))


def _case(kind: str, offset: float) -> tuple[datetime, datetime, datetime]:
    end = Interval(kind).add(START)
    when = START + (end - START) * offset
    return START, end, when


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(amounts, amounts, rates, currencies, kinds, kinds, offsets, percent,
       st.integers(min_value=1, max_value=50))  # fmt: skip
def test_proration_properties(
    a: int, b: int, rate: Decimal, currency: str, kind_a: str, kind_b: str, offset: float,
    pct: int | None, qty: int,
) -> None:  # fmt: skip
    start, end, when = _case(kind_a, offset)
    taxes = TaxTable(default_rate=rate)
    coupon = CouponTerms(code="C", percent_off=Decimal(pct), duration="forever") if pct else None
    current = quote(T(kind_a, a, currency), None, coupon, qty, start, taxes=taxes)
    kw = dict(period_start=start, period_end=end, when=when, coupon=coupon, taxes=taxes)
    p = prorate(current, T(kind_b, b, currency), **kw)  # type: ignore[arg-type]
    # credit never exceeds what was paid for the period
    assert 0 <= p.credit_net_minor <= current.net_minor
    assert 0 <= p.credit_tax_minor <= current.tax_minor
    # totals never negative, and due now / carried are the two sides of one difference
    for value in (p.due_now_minor, p.due_now_net_minor, p.due_now_tax_minor,
                  p.carried_minor, p.carried_net_minor, p.carried_tax_minor):  # fmt: skip
        assert value >= 0
    assert p.due_now_minor - p.carried_minor == p.charge_minor - p.credit_minor
    assert p.due_now_minor == 0 or p.carried_minor == 0
    # idempotent: the same inputs give the same answer
    assert prorate(current, T(kind_b, b, currency), **kw) == p  # type: ignore[arg-type]
    # an upgrade then a change back at the same instant nets to zero (same interval)
    if kind_a == kind_b:
        back = prorate(p.target, T(kind_a, a, currency), **kw)  # type: ignore[arg-type]
        first = p.charge_minor - p.credit_minor
        second = back.charge_minor - back.credit_minor
        assert first + second == 0  # exactly: the same shares, rounded the same way
