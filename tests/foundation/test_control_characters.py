"""Names and other free text that reach mail headers and logs refuse control characters at
input (422 ``control_characters``, beside the field on a page); text of several lines keeps
its line breaks. Rows written before stay readable."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store import validation
from store.accounts import service as accounts
from store.catalog import service as catalog
from store.errors import ValidationFailed
from tests.factories import PASSWORD, api_token, auth, make_account, make_org, make_product
from tests.web.helpers import login, submit

BAD = ["Eve\r\nBcc: all@example.com", "a\nb", "tab\there", "bell\x07", "esc\x1b[31m", "nul\x00",
       "del\x7f", "c1\x85next", "csi\x9b", "sep\u2028line"]  # fmt: skip


@pytest.mark.parametrize("value", BAD)
def test_one_line_text_refuses_control_characters(value: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        validation.text(value, what="Name", max_len=200, field="name")
    assert (refused.value.code, refused.value.field) == ("control_characters", "name")


def test_text_of_several_lines_keeps_line_breaks_only() -> None:
    kept = "First line\r\nSecond\tline\n\nThird: é ü 名前"
    assert validation.text(kept, what="Description", max_len=500, lines=True) == kept
    assert validation.text("Ünïcödé name — fine", what="Name", max_len=50) == "Ünïcödé name — fine"
    for value in ("bell\x07", "esc\x1b[31m", "c1\x85x", "sep\u2029x", "nul\x00"):
        with pytest.raises(ValidationFailed):
            validation.text(value, what="Description", max_len=500, lines=True)


def test_accounts_organizations_and_products_refuse_them(
    client: TestClient, session: Session
) -> None:
    owner = make_account(session, "owner1")
    acme = make_org(session, owner, "acme")
    product = make_product(session, acme, owner, "app")
    headers = auth(api_token(session, owner))
    session.commit()
    name = "Evil\r\nBcc: everyone@example.com"
    signup = client.post(
        "/api/v1/accounts",
        json={"username": "mallory", "email": "m@example.com", "password": PASSWORD,
              "display_name": name},
    )  # fmt: skip
    assert signup.status_code == 422, signup.text
    assert (signup.json()["error"], signup.json()["field"]) == (
        "control_characters",
        "display_name",
    )
    org = client.post("/api/v1/orgs", json={"slug": "evil", "name": name}, headers=headers)
    assert (org.status_code, org.json()["error"]) == (422, "control_characters"), org.text
    renamed = client.patch("/api/v1/orgs/acme", json={"name": name}, headers=headers)
    assert (renamed.status_code, renamed.json()["field"]) == (422, "name"), renamed.text
    made = client.post(
        "/api/v1/orgs/acme/products",
        json={"kind": "image", "slug": "other", "title": name},
        headers=headers,
    )
    assert (made.status_code, made.json()["field"]) == (422, "title"), made.text
    tier = client.post(
        "/api/v1/products/acme/app/tiers",
        json={"slug": "x", "name": "Tier\x1b[2J", "billing": "free"},
        headers=headers,
    )
    assert (tier.status_code, tier.json()["error"]) == (422, "control_characters"), tier.text
    # A description keeps its paragraphs.
    described = client.patch(
        "/api/v1/products/acme/app",
        json={"description_md": "# Title\n\nA paragraph.\r\n\n- item"},
        headers=headers,
    )
    assert described.status_code == 200, described.text
    session.expire_all()
    assert "\n\nA paragraph." in catalog.get_product(session, product.id).description_md


def test_the_profile_page_shows_the_error_beside_the_field(
    client: TestClient, session: Session
) -> None:
    account = make_account(session, "named")
    session.commit()
    login(client, "named")
    page = submit(client, "/my/account", "/my/account/profile", {"display_name": "Bob\r\nX: y"})
    assert page.status_code == 422
    assert 'id="profile-display_name-error">Display name cannot contain' in page.text
    session.expire_all()
    assert accounts.get_account_by_username(session, "named").display_name == account.display_name  # type: ignore[union-attr]


def test_rows_written_before_stay_readable(client: TestClient, session: Session) -> None:
    owner = make_account(session, "legacy")
    acme = make_org(session, owner, "acme")
    owner.display_name = "Old\nname"  # written before input was checked
    acme.name = "Old\r\nOrg"
    session.commit()
    assert client.get("/api/v1/orgs/acme").status_code == 200
    login(client, "legacy")
    assert client.get("/my/account").status_code == 200
