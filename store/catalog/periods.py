"""How a tier is paid for (free, once, monthly, yearly) and a subscription's renewal interval.

A tier's period is part of the catalog; what a buyer pays for it is billing's quote
(``store.billing.pricing``). A new period starts here: its value, labels, whether it recurs
and its interval.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from store.errors import ValidationFailed


class BillingKind(StrEnum):
    """How a tier is paid for. The values are what the database and the API carry."""

    FREE = "free"
    ONE_TIME = "one_time"
    MONTH = "month"
    YEAR = "year"

    @property
    def recurring(self) -> bool:
        return self in (BillingKind.MONTH, BillingKind.YEAR)

    @property
    def paid(self) -> bool:
        return self is not BillingKind.FREE

    @property
    def interval(self) -> Interval | None:
        """The renewal interval of a subscription (Stripe's plan ``interval``)."""
        if self is BillingKind.MONTH:
            return Interval.MONTH
        if self is BillingKind.YEAR:
            return Interval.YEAR
        return None

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def choice_label(self) -> str:
        """How a publisher's form names it."""
        return _CHOICES[self]

    @classmethod
    def choices(cls) -> tuple[BillingKind, ...]:
        """In the order forms offer them."""
        return (cls.FREE, cls.MONTH, cls.YEAR, cls.ONE_TIME)

    @classmethod
    def parse(cls, value: object) -> BillingKind:
        try:
            return cls(str(value))
        except ValueError:
            raise ValidationFailed(
                f"Billing must be one of {', '.join(k.value for k in cls)}",
                code="bad_billing",
                field="billing",
            ) from None


class Interval(StrEnum):
    """A subscription's renewal interval, named as Stripe names it."""

    MONTH = "month"
    YEAR = "year"

    def add(self, start: datetime, count: int = 1) -> datetime:
        """``start`` plus ``count`` intervals; the day is clamped to the month's last day."""
        months = count * (12 if self is Interval.YEAR else 1)
        month0 = start.month - 1 + months
        year, month = start.year + month0 // 12, month0 % 12 + 1
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]
        return start.replace(year=year, month=month, day=min(start.day, days))


_LABELS = {
    BillingKind.FREE: "Free",
    BillingKind.ONE_TIME: "One-time",
    BillingKind.MONTH: "Monthly",
    BillingKind.YEAR: "Yearly",
}

_CHOICES = {
    BillingKind.FREE: "Free",
    BillingKind.MONTH: "Monthly subscription",
    BillingKind.YEAR: "Yearly subscription",
    BillingKind.ONE_TIME: "One-time purchase",
}


class BillingKindType(TypeDecorator[BillingKind]):
    """A ``BillingKind`` stored as its string value (the column stays a VARCHAR)."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else BillingKind(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> BillingKind | None:
        return None if value is None else BillingKind(value)


class IntervalType(TypeDecorator[Interval]):
    """An ``Interval`` stored as its string value."""

    impl = String(8)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else Interval(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Interval | None:
        return None if value is None else Interval(value)
