"""`store registry visibility`: a paid product's repositories cannot be marked public (exit 1
with the reason); what is in effect is shown beside the setting."""

from __future__ import annotations

from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.registry import hub
from tests.cli._support import Run
from tests.factories import make_org, make_product, paid_tier


def test_a_paid_products_repository_is_not_marked_public(run: Run, db: Session) -> None:
    made = run(
        "admin",
        "create",
        "--username",
        "root-op",
        "--email",
        "root@example.com",
        "--password",
        "correct horse battery",
    )
    assert made.code == 0, made.err
    admin = accounts.get_account_by_username(db, "root-op")
    assert admin is not None
    acme = make_org(db, admin, "acme")
    make_product(db, acme, admin, "app", tiers=[paid_tier()])
    hub.set_visibility(db, name="acme/app/old", visibility="public")  # marked before: no effect

    refused = run("registry", "visibility", "acme/app/worker", "public")
    assert refused.code == 1
    assert "paid tier" in refused.err and refused.out == ""

    shown = run("registry", "visibility", "acme/app/old")
    assert shown.code == 0, shown.err
    assert "acme/app/old: public (not public)" in shown.out
    assert "the public mark does not open acme/app/old" in shown.out
