"""The billing runtime of one app: settings and gateway, made on first use (``get_billing``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from store.billing.config import BillingSettings
from store.config import Settings

if TYPE_CHECKING:
    from datetime import datetime

    from store.billing.gateway import PaymentGateway
    from store.billing.pricing import Buyer, CouponTerms, Priced, Quote

_lock = threading.Lock()


@dataclass
class Billing:
    settings: BillingSettings
    gateway: PaymentGateway
    testing: bool = False
    # The store's settings (links in the notices mailed about payments: store.billing.notices).
    store: Settings | None = None
    # Monotonic time of the last opportunistic sweep in this process.
    last_sweep: float = field(default=0.0)

    @property
    def test_mode(self) -> bool:
        """The built-in test gateway is in use (pages say TEST MODE). Stripe test keys
        (``sk_test_``) are shown as a quieter note: see ``gateway.test_mode``."""
        return self.gateway.name == "test"

    def quote(
        self,
        tier: Priced,
        buyer: Buyer | None = None,
        coupon: CouponTerms | None = None,
        quantity: int = 1,
        when: datetime | None = None,
    ) -> Quote:
        """``store.billing.pricing.quote`` with this store's tax rates."""
        from store.billing.pricing import quote

        return quote(tier, buyer, coupon, quantity, when, taxes=self.settings.taxes)

    def sweep_due(self) -> bool:
        interval = self.settings.sweep_interval_seconds
        if interval <= 0:
            return False
        now = time.monotonic()
        with _lock:
            if now - self.last_sweep < interval:
                return False
            self.last_sweep = now
            return True


def build_billing(settings: BillingSettings, store_settings: Settings | None = None) -> Billing:
    testing = store_settings is not None and store_settings.environment == "test"
    gateway: PaymentGateway
    if settings.gateway_name == "stripe":
        from store.billing.stripe_gateway import StripeGateway

        gateway = StripeGateway(settings, testing=testing)
    else:
        from store.billing.test_gateway import TestGateway

        gateway = TestGateway()
    return Billing(settings=settings, gateway=gateway, testing=testing, store=store_settings)


def billing_of(app_state: object) -> Billing:
    billing = getattr(app_state, "billing", None)
    if billing is None:
        with _lock:
            billing = getattr(app_state, "billing", None)
            if billing is None:
                billing = build_billing(BillingSettings(), getattr(app_state, "settings", None))
                app_state.billing = billing  # type: ignore[attr-defined]
    return billing


def get_billing(request: Request) -> Billing:
    """FastAPI dependency: the app's billing runtime (tests set ``app.state.billing``)."""
    return billing_of(request.app.state)
