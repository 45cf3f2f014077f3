"""Billing settings, read from the environment (no prefix for Stripe's own names)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from store.billing.pricing import TaxTable, normalize_country
from store.errors import ValidationFailed

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
    # Sales tax added on top of tier prices, in basis points (1900 = 19%); 0 = none. The
    # default for buyers whose country has no rate of its own in ``tax_rates``.
    tax_rate_bps: int = Field(
        default=0,
        ge=0,
        le=10_000,
        validation_alias=AliasChoices("tax_rate_bps", "STORE_BILLING_TAX_RATE_BPS"),
    )
    tax_label: str = Field(
        default="Tax", validation_alias=AliasChoices("tax_label", "STORE_BILLING_TAX_LABEL")
    )
    # Rates per buyer country in percent: "DE=19,FR=20,GB=20" ("*=" sets the default).
    tax_rates: str = Field(
        default="", validation_alias=AliasChoices("tax_rates", "STORE_BILLING_TAX_RATES")
    )
    # The store's own country: EU business buyers elsewhere in the EU pay no tax (reverse
    # charge); those in this country do.
    tax_home_country: str = Field(
        default="",
        validation_alias=AliasChoices("tax_home_country", "STORE_BILLING_TAX_HOME_COUNTRY"),
    )
    # Publishers (owners of the selling organization) refund their own sales for this many
    # days after payment; 0: only administrators refund.
    publisher_refund_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        validation_alias=AliasChoices(
            "publisher_refund_days", "STORE_BILLING_PUBLISHER_REFUND_DAYS"
        ),
    )
    # The test gateway's saved cards renew subscriptions when the sweep runs (demo clock).
    sweep_interval_seconds: int = Field(
        default=60,
        ge=0,
        validation_alias=AliasChoices("sweep_interval_seconds", "STORE_BILLING_SWEEP_INTERVAL"),
    )

    @field_validator("tax_rates")
    @classmethod
    def _tax_rates(cls, value: str) -> str:
        try:
            TaxTable.parse(value)
        except ValidationFailed as exc:
            raise ValueError(exc.detail) from None
        return value

    @field_validator("tax_home_country")
    @classmethod
    def _home_country(cls, value: str) -> str:
        try:
            return normalize_country(value) or ""
        except ValidationFailed as exc:
            raise ValueError(exc.detail) from None

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

    @property
    def taxes(self) -> TaxTable:
        """The tax rates as the quote uses them (``store.billing.pricing``)."""
        return TaxTable.parse(
            self.tax_rates,
            default_rate=Decimal(self.tax_rate_bps) / 100,
            label=self.tax_label,
            home_country=self.tax_home_country or None,
        )


def stripe_environment() -> dict[str, str | None]:
    """The Stripe keys and the gateway choice as the environment sets them, by their
    variable names (the start-up checks of store.observability.config_check)."""
    billing = BillingSettings()
    values = {
        "STRIPE_SECRET_KEY": billing.stripe_secret_key,
        "STRIPE_PUBLISHABLE_KEY": billing.stripe_publishable_key,
        "STRIPE_WEBHOOK_SECRET": billing.stripe_webhook_secret,
    }
    values["STORE_BILLING_GATEWAY"] = billing.gateway
    return values
