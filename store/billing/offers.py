"""What a product costs at a glance: free or not, and its cheapest paid plan.

Prices come from ``store.billing.pricing.quote`` (the one price computation); this only
chooses which tier to show. The cheapest paid plan is the one with the lowest price per
charge before tax, a monthly plan before a yearly one of the same price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from store.billing.pricing import quote
from store.catalog.models import Tier
from store.catalog.periods import BillingKind

_ORDER = {BillingKind.MONTH: 0, BillingKind.YEAR: 1, BillingKind.ONE_TIME: 2}


@dataclass(frozen=True)
class Offer:
    free: Tier | None  # the first free tier, if any
    cheapest: Tier | None  # the cheapest paid tier, if any
    trial_days: int  # the longest trial of a paid tier (0: none)

    @property
    def any(self) -> bool:
        return self.free is not None or self.cheapest is not None


def offer_of(tiers: Iterable[Tier]) -> Offer:
    active = [t for t in tiers if t.active]
    free = next((t for t in active if not BillingKind(t.billing).paid), None)
    paid = [t for t in active if BillingKind(t.billing).paid]
    cheapest = None
    if paid:
        cheapest = min(
            paid,
            key=lambda t: (
                quote(t).subtotal_minor,
                _ORDER.get(BillingKind(t.billing), 3),
                t.sort_order,
                t.slug,
            ),
        )
    trial = max((t.trial_days for t in paid if BillingKind(t.billing).recurring), default=0)
    return Offer(free, cheapest, trial)
