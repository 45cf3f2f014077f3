"""Billing settings, read from the environment (no prefix for Stripe's own names)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

STRIPE_API = "https://api.stripe.com"


class BillingSettings(BaseSettings):
    """Stripe is used when its three keys are set; otherwise the built-in test gateway."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    stripe_secret_key: str | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str = STRIPE_API
    gateway: Literal["auto", "stripe", "test"] = Field(
        default="auto", validation_alias=AliasChoices("gateway", "STORE_BILLING_GATEWAY")
    )
    grace_days: int = Field(
        default=7,
        ge=0,
        le=90,
        validation_alias=AliasChoices("grace_days", "STORE_BILLING_GRACE_DAYS"),
    )
    webhook_tolerance: int = Field(
        default=300,
        ge=0,
        validation_alias=AliasChoices("webhook_tolerance", "STORE_WEBHOOK_TOLERANCE"),
    )
    # Sales tax added on top of tier prices, in basis points (1900 = 19%); 0 = none.
    tax_rate_bps: int = Field(
        default=0,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("tax_rate_bps", "STORE_BILLING_TAX_RATE_BPS"),
    )
    tax_label: str = Field(
        default="Tax", validation_alias=AliasChoices("tax_label", "STORE_BILLING_TAX_LABEL")
    )
    # The test gateway's saved cards renew subscriptions when the sweep runs (demo clock).
    sweep_interval_seconds: int = Field(
        default=60,
        ge=0,
        validation_alias=AliasChoices("sweep_interval_seconds", "STORE_BILLING_SWEEP_INTERVAL"),
    )

    @property
    def stripe_configured(self) -> bool:
        return bool(
            self.stripe_secret_key and self.stripe_publishable_key and self.stripe_webhook_secret
        )

    @property
    def gateway_name(self) -> str:
        if self.gateway == "auto":
            return "stripe" if self.stripe_configured else "test"
        return self.gateway

    def tax_for(self, amount_minor: int) -> int:
        """Tax on an amount, rounded half up to the minor unit."""
        return (amount_minor * self.tax_rate_bps + 5_000) // 10_000
