"""Configuration checks at start: every problem listed at once; `store serve` exits 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from store.app import create_app
from store.billing.config import stripe_environment
from store.cli.main import main
from store.config import Settings
from store.observability.config_check import ConfigurationError, check

GOOD_SECRET = "s" * 32
PG = "postgresql://store:pw@db:5432/store"
STRIPE = {
    "STRIPE_SECRET_KEY": "sk_test_abc",
    "STRIPE_PUBLISHABLE_KEY": "pk_test_abc",
    "STRIPE_WEBHOOK_SECRET": "whsec_abc",
}
NO_STRIPE: dict[str, Any] = {}


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "production",
        "secret_key": GOOD_SECRET,
        "public_url": "https://store.example.com",
        "registry_url": "https://registry.example.com",
        "database_url": PG,
        "metrics_token": "m" * 32,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_a_good_production_configuration_passes() -> None:
    report = check(production(), STRIPE)
    assert report.problems == []
    assert report.warnings == []


def test_production_refuses_the_test_gateway_unless_allowed() -> None:
    gateways = [{}, {"STORE_BILLING_GATEWAY": "test"}, {**STRIPE, "STORE_BILLING_GATEWAY": "test"}]
    for gateway in gateways:
        report = check(production(), {**NO_STRIPE, **gateway})
        assert len(report.problems) == 1, report.problems
        assert report.problems[0].startswith("production refuses the built-in test gateway")
        assert "STORE_ALLOW_TEST_PAYMENTS=true" in report.problems[0]
    report = check(production(allow_test_payments=True), NO_STRIPE)
    assert report.problems == []
    assert ["TEST gateway" in w for w in report.warnings] == [True]
    # Outside production the test gateway is the default, without a word.
    assert check(production(environment="development"), NO_STRIPE).problems == []


def test_production_requires_a_metrics_token_or_private_metrics() -> None:
    problems = check(production(metrics_token=None), STRIPE).problems
    assert len(problems) == 1 and problems[0].startswith("/metrics is open to anyone")
    assert check(production(metrics_token=None, metrics_private=True), STRIPE).problems == []


def test_the_test_payments_banner(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        secret_key=GOOD_SECRET,
    )
    app = create_app(settings)
    with TestClient(app) as client:

        def home(**changes: Any) -> str:
            app.state.settings = settings.model_copy(update=changes)
            return client.get("/", headers={"Accept": "text/html"}).text

        assert "TEST PAYMENTS" not in home()
        assert "TEST PAYMENTS" not in home(environment="production")
        assert "TEST PAYMENTS" in home(environment="production", allow_test_payments=True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"secret_key": None}, "STORE_SECRET_KEY is not set"),
        (
            {"secret_key": "short"},
            "STORE_SECRET_KEY is 5 characters long; production needs at least 32",
        ),
        ({"public_url": "http://store.example.com"}, "STORE_PUBLIC_URL must be an https:// URL"),
        (
            {"registry_url": "http://registry.example.com"},
            "STORE_REGISTRY_URL must be an https:// URL",
        ),
        ({"database_url": None}, "STORE_DATABASE_URL must point at PostgreSQL in production"),
        ({"database_url": "sqlite:///x.db"}, "STORE_DATABASE_URL must point at PostgreSQL"),
    ],
)
def test_each_production_rule(overrides: dict[str, Any], message: str, tmp_path: Path) -> None:
    settings = production(data_dir=tmp_path, **overrides)
    problems = check(settings, STRIPE).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(message)
    # The same settings are fine outside production.
    relaxed = settings.model_copy(update={"environment": "development"})
    assert check(relaxed, STRIPE).problems == []


def test_plain_http_is_allowed_in_production_only_when_said_so() -> None:
    settings = production(
        public_url="http://localhost:8000", registry_url="http://localhost:5000", allow_http=True
    )
    report = check(settings, STRIPE)
    assert report.problems == []
    assert len(report.warnings) == 2
    assert all("STORE_ALLOW_HTTP=true" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("stripe", "message"),
    [
        (
            {"STRIPE_SECRET_KEY": "sk_test_abc"},
            "Stripe is partly configured: STRIPE_SECRET_KEY set but STRIPE_PUBLISHABLE_KEY, "
            "STRIPE_WEBHOOK_SECRET not",
        ),
        ({**STRIPE, "STRIPE_WEBHOOK_SECRET": ""}, "Stripe is partly configured"),
        ({**STRIPE, "STRIPE_PUBLISHABLE_KEY": "sk_test_x"}, "STRIPE_PUBLISHABLE_KEY does not look"),
        (
            {**STRIPE, "STRIPE_SECRET_KEY": "sk_live_abc"},
            "STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY are of different modes",
        ),
        ({"STORE_BILLING_GATEWAY": "stripe"}, "STORE_BILLING_GATEWAY=stripe needs"),
    ],
)
def test_stripe_keys_all_or_none(stripe: dict[str, Any], message: str) -> None:
    problems = check(production(), stripe).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(message)


def test_stripe_keys_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_abc")
    monkeypatch.delenv("STRIPE_PUBLISHABLE_KEY", raising=False)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    assert any("partly configured" in p for p in check(production(), stripe_environment()).problems)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("public_url", "http://", "STORE_PUBLIC_URL has no host name"),
        ("public_url", "https://store.example.com/?x=1", "STORE_PUBLIC_URL must not have a query"),
        ("registry_url", "https://u:p@registry.example.com", "STORE_REGISTRY_URL must not contain"),
        (
            "registry_url",
            "https://registry.example.com:99999",
            "STORE_REGISTRY_URL is not a valid URL",
        ),
        ("registry_notify_url", "store:8000", "STORE_REGISTRY_NOTIFY_URL must start with http"),
        ("database_url", "mysql://u@h/db", "STORE_DATABASE_URL names mysql"),
        ("database_url", "not a url", "STORE_DATABASE_URL is not a database URL"),
    ],
)
def test_bad_urls_in_any_mode(field: str, value: str, message: str, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path).model_copy(update={field: value})  # type: ignore[call-arg]
    problems = check(settings).problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(message)


def test_every_problem_is_reported_at_once_by_create_app(tmp_path: Path) -> None:
    settings = production(
        data_dir=tmp_path / "data",
        secret_key=None,
        public_url="http://x.example",
        database_url=None,
        allow_test_payments=True,
    )
    with pytest.raises(ConfigurationError) as raised:
        create_app(settings)
    error = raised.value
    assert error.code == "misconfigured"
    assert len(error.problems) == 3
    for name in ("STORE_SECRET_KEY", "STORE_PUBLIC_URL", "STORE_DATABASE_URL"):
        assert f"  - {name}" in error.detail
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_the_registry_notification_url_defaults_to_the_public_url() -> None:
    settings = Settings(_env_file=None, public_url="https://store.example.com")  # type: ignore[call-arg]
    assert settings.registry_events_url == "https://store.example.com/registry/events"
    inside = settings.model_copy(update={"registry_notify_url": "http://store:8000/"})
    assert inside.registry_events_url == "http://store:8000/registry/events"
    full = settings.model_copy(update={"registry_notify_url": "http://store:8000/registry/events"})
    assert full.registry_events_url == "http://store:8000/registry/events"


def test_serve_exits_1_listing_every_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in list(__import__("os").environ):
        if name.startswith(("STORE_", "STRIPE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("STORE_ENVIRONMENT", "production")
    monkeypatch.setenv("STORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORE_SECRET_KEY", "too-short")
    monkeypatch.setenv("STORE_PUBLIC_URL", "http://store.example.com")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_x")
    monkeypatch.setenv("STORE_METRICS_TOKEN", "m" * 32)
    calls: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda *a, **kw: calls.append(a))

    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the configuration has 5 problem(s):\n")
    for text in (
        "STORE_SECRET_KEY is 9 characters long",
        "STORE_PUBLIC_URL must be an https:// URL",
        "STORE_REGISTRY_URL must be an https:// URL",
        "STORE_DATABASE_URL must point at PostgreSQL",
        "Stripe is partly configured",
    ):
        assert f"  - {text}" in err
    assert "docs/deploy.md" in err
    assert calls == []
    assert not (tmp_path / "data").exists()
