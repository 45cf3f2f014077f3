"""Configuration checks run when the store starts (``create_app`` and ``store serve``).

Every problem is collected first, then reported together, so an operator fixes them in one
round. Everywhere: the URLs must be usable absolute http(s) URLs and the database URL must
name SQLite or PostgreSQL. In production (``STORE_ENVIRONMENT=production``) also:

- ``STORE_SECRET_KEY`` set explicitly, at least 32 characters (every process and host must
  share it: it signs sessions and encrypts the signing keys);
- ``STORE_PUBLIC_URL`` and ``STORE_REGISTRY_URL`` on https, unless ``STORE_ALLOW_HTTP=true``
  says the deployment has no TLS at all (a trial, an isolated network). TLS terminated by a
  proxy needs no opt-out: the public URL is the https address users see;
- ``STORE_DATABASE_URL`` pointing at PostgreSQL;
- Stripe's three keys all set or none, of matching kinds and modes; without them (or with
  ``STORE_BILLING_GATEWAY=test``) the built-in test gateway would sell paid tiers for test
  cards, so it is refused unless ``STORE_ALLOW_TEST_PAYMENTS=true`` (then every page shows
  a banner);
- ``/metrics`` protected: ``STORE_METRICS_TOKEN`` set, or ``STORE_METRICS_PRIVATE=true``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from store.config import Settings
from store.errors import StoreError

log = logging.getLogger("store.config")
MIN_SECRET_LENGTH = 32
STRIPE_KEYS = ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET")
_STRIPE_PREFIXES = {
    "STRIPE_SECRET_KEY": ("sk_", "rk_"),
    "STRIPE_PUBLISHABLE_KEY": ("pk_",),
    "STRIPE_WEBHOOK_SECRET": ("whsec_",),
}


class ConfigurationError(StoreError):
    """The settings cannot run this store; ``problems`` lists every reason."""

    status_code = 500
    code = "misconfigured"

    def __init__(self, problems: list[str]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"the configuration has {len(problems)} problem(s):\n{lines}\n"
            "See docs/deploy.md#configuration."
        )
        self.problems = problems


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def url_problem(name: str, value: str) -> str | None:
    """Why ``value`` is not a usable base URL for ``name``, or None."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        return f"{name} is not a valid URL ({value!r}: {exc})"
    if parts.scheme not in ("http", "https"):
        return f"{name} must start with http:// or https:// (it is {value!r})"
    if not parts.hostname:
        return f"{name} has no host name (it is {value!r})"
    if parts.username or parts.password:
        return f"{name} must not contain a user name or password"
    if parts.query or parts.fragment:
        return f"{name} must not have a query or fragment (it is {value!r})"
    return None


def check(settings: Settings, stripe: Mapping[str, str | None] | None = None) -> Report:
    """Every problem and warning of these settings. ``stripe`` maps STRIPE_* names and
    STORE_BILLING_GATEWAY to their values (``store.billing.config.stripe_environment``;
    checked in production only, none given is none set)."""
    report = Report()
    urls = [
        ("STORE_PUBLIC_URL", settings.public_url),
        ("STORE_REGISTRY_URL", settings.registry_url),
    ]
    if settings.registry_notify_url:
        urls.append(("STORE_REGISTRY_NOTIFY_URL", settings.registry_notify_url))
    for name, value in urls:
        problem = url_problem(name, value)
        if problem:
            report.problems.append(problem)
    backend = _database_backend(settings, report)
    if settings.environment == "production":
        _production(settings, backend, report)
        _stripe(stripe or {}, report, settings)
    return report


def _database_backend(settings: Settings, report: Report) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(settings.resolved_database_url).get_backend_name()
    except (ArgumentError, ValueError):
        report.problems.append(
            "STORE_DATABASE_URL is not a database URL "
            "(expected postgresql://user:password@host:5432/name)"
        )
        return None
    if backend not in ("sqlite", "postgresql"):
        report.problems.append(
            f"STORE_DATABASE_URL names {backend}; the store runs on PostgreSQL or SQLite"
        )
    return backend


def _production(settings: Settings, backend: str | None, report: Report) -> None:
    secret = settings.secret_key
    if not secret:
        report.problems.append(
            "STORE_SECRET_KEY is not set: production needs an explicit secret of at least "
            f"{MIN_SECRET_LENGTH} characters, the same for every store process (generate one "
            "with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )
    elif len(secret) < MIN_SECRET_LENGTH:
        report.problems.append(
            f"STORE_SECRET_KEY is {len(secret)} characters long; production needs at least "
            f"{MIN_SECRET_LENGTH}"
        )
    for name, value in (
        ("STORE_PUBLIC_URL", settings.public_url),
        ("STORE_REGISTRY_URL", settings.registry_url),
    ):
        if value.startswith("http://"):
            if settings.allow_http:
                report.warnings.append(f"{name} is plain http ({value}): STORE_ALLOW_HTTP=true")
            else:
                report.problems.append(
                    f"{name} must be an https:// URL in production (it is {value}); behind a "
                    "TLS-terminating proxy give the https address clients use, or set "
                    "STORE_ALLOW_HTTP=true to run without TLS"
                )
    if backend == "sqlite":
        report.problems.append(
            "STORE_DATABASE_URL must point at PostgreSQL in production "
            "(postgresql://user:password@host:5432/name); it is the embedded SQLite"
        )
    if not settings.metrics_token and not settings.metrics_private:
        report.problems.append(
            "/metrics is open to anyone: set STORE_METRICS_TOKEN (scrapers send it as a "
            "bearer token) or STORE_METRICS_PRIVATE=true (only clients on loopback or private "
            "networks, not through a proxy)"
        )
    if settings.cookie_secure is False and settings.public_url.startswith("https://"):
        report.warnings.append("STORE_COOKIE_SECURE=false: session cookies also go over http")


def _test_gateway(settings: Settings | None, report: Report) -> None:
    if settings is not None and settings.allow_test_payments:
        report.warnings.append(
            "STORE_ALLOW_TEST_PAYMENTS=true: paid tiers use the built-in TEST gateway (test "
            "cards, no real payments); every page says so"
        )
        return
    report.problems.append(
        "production refuses the built-in test gateway (paid tiers would be sold for test "
        "cards): set STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY and STRIPE_WEBHOOK_SECRET, or "
        "STORE_ALLOW_TEST_PAYMENTS=true for a trial"
    )


def _stripe(values: Mapping[str, Any], report: Report, settings: Settings | None = None) -> None:
    present = [k for k in STRIPE_KEYS if values.get(k)]
    missing = [k for k in STRIPE_KEYS if not values.get(k)]
    gateway = values.get("STORE_BILLING_GATEWAY") or "auto"
    if gateway == "test":
        _test_gateway(settings, report)
        return
    if present and missing:
        report.problems.append(
            f"Stripe is partly configured: {', '.join(present)} set but {', '.join(missing)} "
            "not; set all three (Stripe payments) or none (the built-in test gateway)"
        )
        return
    if not present:
        if gateway == "stripe":
            report.problems.append(
                "STORE_BILLING_GATEWAY=stripe needs STRIPE_SECRET_KEY, STRIPE_PUBLISHABLE_KEY "
                "and STRIPE_WEBHOOK_SECRET"
            )
        else:
            _test_gateway(settings, report)
        return
    for name in STRIPE_KEYS:
        if not str(values[name]).startswith(_STRIPE_PREFIXES[name]):
            expected = " or ".join(_STRIPE_PREFIXES[name])
            report.problems.append(f"{name} does not look like a Stripe key (expected {expected}…)")
    secret, publishable = str(values["STRIPE_SECRET_KEY"]), str(values["STRIPE_PUBLISHABLE_KEY"])
    if ("_test_" in secret) != ("_test_" in publishable):
        report.problems.append(
            "STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY are of different modes (one test, "
            "one live)"
        )


def check_settings(
    settings: Settings, stripe_environment: Callable[[], Mapping[str, str | None]]
) -> Report:
    """Raise :class:`ConfigurationError` listing every problem; log the warnings. The Stripe
    settings are read (``stripe_environment``) only in production, where they are checked."""
    production = settings.environment == "production"
    report = check(settings, stripe_environment() if production else None)
    if report.problems:
        raise ConfigurationError(report.problems)
    for warning in report.warnings:
        log.warning("configuration: %s", warning)
    return report
