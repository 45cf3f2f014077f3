"""The billing runtime of one app: settings, gateway and the license signer, made on first use
(``get_billing``) and passed explicitly to every billing function that prices, charges,
mails or changes an entitlement's terms."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from store.billing.config import BillingSettings
from store.config import Settings
from store.licensing.signer import LicenseSigner

if TYPE_CHECKING:
    from datetime import datetime

    from store.billing.gateway import PaymentGateway
    from store.billing.pricing import Buyer, CouponTerms, Priced, Quote
    from store.keys.service import KeyRing

_lock = threading.Lock()


@dataclass
class Billing:
    settings: BillingSettings
    gateway: PaymentGateway
    testing: bool = False
    # The store's settings (links in the notices mailed about payments: store.billing.notices).
    store: Settings | None = None
    # Signs the new license when a payment changes an entitlement's terms (renewal, grace,
    # reinstatement); None: the next request for the license issues it.
    signer: LicenseSigner | None = None
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


def build_billing(
    settings: BillingSettings,
    store_settings: Settings | None = None,
    keyring: KeyRing | None = None,
) -> Billing:
    """The runtime for these settings; with the store's settings and key ring it signs the
    licenses its payments renew."""
    testing = store_settings is not None and store_settings.environment == "test"
    gateway: PaymentGateway
    if settings.gateway_name == "stripe":
        from store.billing.stripe_gateway import StripeGateway

        gateway = StripeGateway(settings, testing=testing)
    else:
        from store.billing.test_gateway import TestGateway

        gateway = TestGateway()
    signer = (
        LicenseSigner(keyring, store_settings)
        if keyring is not None and store_settings is not None
        else None
    )
    return Billing(
        settings=settings, gateway=gateway, testing=testing, store=store_settings, signer=signer
    )


def billing_of(app_state: object) -> Billing:
    """The app's runtime, made on first use. One given to the app without the store's
    settings or a signer (tests set ``app.state.billing``) takes the app's settings and key
    ring: the app's payments always mail their notices and re-issue the licenses they
    change."""
    billing = getattr(app_state, "billing", None)
    if billing is None or billing.signer is None or billing.store is None:
        with _lock:
            billing = getattr(app_state, "billing", None)
            settings = getattr(app_state, "settings", None)
            keyring = getattr(app_state, "keyring", None)
            if billing is None:
                billing = build_billing(BillingSettings(), settings, keyring)
                app_state.billing = billing  # type: ignore[attr-defined]
            if billing.store is None:
                billing.store = settings
            if billing.signer is None and keyring is not None and billing.store is not None:
                billing.signer = LicenseSigner(keyring, billing.store)
    return billing


def get_billing(request: Request) -> Billing:
    """FastAPI dependency: the app's billing runtime (tests set ``app.state.billing``)."""
    return billing_of(request.app.state)
