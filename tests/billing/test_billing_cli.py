"""`store billing ...` against a real database file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from store.billing import orders
from store.billing.gateway import PaymentInput
from store.billing.models import Order
from store.billing.runtime import build_billing
from store.cli.billing import register
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from tests.billing.helpers import billing_settings
from tests.factories import make_account, make_admin, make_org, make_product, paid_tier, tier_of


def run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="store")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORE_SECRET_KEY", "cli-secret-0123456789")
    monkeypatch.setenv("STORE_BILLING_GATEWAY", "test")
    for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    from store import migrate

    migrate.upgrade(engine)
    billing = build_billing(billing_settings(), settings)
    with session_scope(make_sessionmaker(engine)) as session:
        make_admin(session, "cli-admin")
        owner = make_account(session)
        product = make_product(
            session,
            make_org(session, owner),
            owner,
            tiers=[paid_tier("once", 1200, "one_time"), paid_tier("pro", 500, "month")],
        )
        order = orders.start_checkout(
            session, billing, account=make_account(session), tier=tier_of(product, "once")
        )
        orders.pay(
            session, billing, order=order, payment=PaymentInput(card_number="4242424242424242")
        )
        order_id = str(order.id)
    engine.dispose()
    return order_id


def test_sync_orders_refund_sweep(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["billing", "sync", "--json"]) == 0
    synced = json.loads(capsys.readouterr().out)
    assert {p["billing"] for p in synced} == {"one_time", "month"}
    assert run(["billing", "orders", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [o["status"] for o in listed] == ["paid"]
    assert run(["billing", "refund", cli_env, "--amount", "2.00", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["refunded_minor"] == 200
    assert run(["billing", "refund", cli_env]) == 0
    assert "refunded" in capsys.readouterr().out
    assert run(["billing", "refund", cli_env]) == 1
    assert "cannot be refunded" in capsys.readouterr().err
    assert run(["billing", "sweep", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "renewed": 0,
        "ended": 0,
        "priced": 0,
        "suspended": 0,
        "expired": 0,
        "trial_ending": 0,
        "grace_ending": 0,
    }


def test_coupons(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(Settings().resolved_database_url)
    with session_scope(make_sessionmaker(engine)) as session:
        order = session.get(Order, uuid.UUID(cli_env))
        assert order is not None
        org, repo = order.product.organization.slug, order.product.repository
    engine.dispose()
    argv = ["billing", "coupon-create", org, "cli-10", "--product", repo, "--amount", "1"]
    assert run([*argv, "--duration", "repeating", "--months", "3", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert (made["code"], made["terms"], made["state"]) == (
        "CLI-10",
        "$1.00 off for 3 months",
        "active",
    )
    assert run(argv) == 1
    assert "already has a coupon CLI-10" in capsys.readouterr().err
    assert run(["billing", "coupon-create", org, "BAD", "--product", repo, "--percent", "150"]) == 1
    assert "at most 100" in capsys.readouterr().err
    assert run(["billing", "coupons", org]) == 0
    out = capsys.readouterr().out
    assert "CLI-10" in out and "$1.00 off for 3 months" in out
    assert run(["billing", "coupon-deactivate", org, made["id"]]) == 0
    assert "CLI-10: inactive" in capsys.readouterr().out
