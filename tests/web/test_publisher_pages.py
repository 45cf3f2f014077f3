"""The publisher dashboard: organizations, products, tiers, members, robots and grants."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.licensing import entitlements
from tests.factories import make_account, make_org, make_product
from tests.web.helpers import login, submit


def test_publisher_creates_org_product_tier_and_publishes(
    browser: TestClient, session: Session
) -> None:
    make_account(session, "maker")
    login(browser, "maker")

    org = submit(browser, "/publish", "/publish", {"slug": "makers", "name": "Makers Inc"})
    assert org.url.path == "/publish/makers"
    assert "Organization makers is created" in org.text

    product = submit(
        browser,
        "/publish/makers/new",
        "/publish/makers/new",
        {
            "kind": "image",
            "slug": "widget",
            "title": "Widget Server",
            "summary": "Serves widgets",
            "description_md": "# Widgets\n\nFast.",
            "categories": "web, Databases",
            "platforms": "linux/amd64, linux/arm64",
            "docs_url": "https://docs.makers.test",
        },
    )
    assert product.url.path == "/publish/makers/widget"
    assert "makers/widget is created as a draft" in product.text

    too_early = submit(
        browser, "/publish/makers/widget", "/publish/makers/widget/status", {"status": "published"}
    )
    assert too_early.status_code == 409
    assert "Add at least one active tier before publishing" in too_early.text

    tier = submit(
        browser,
        "/publish/makers/widget",
        "/publish/makers/widget/tiers",
        {
            "slug": "pro",
            "name": "Pro",
            "billing": "month",
            "price": "49.00",
            "currency": "usd",
            "trial_days": "14",
            "seats": "5",
            "features": "Support\n\nUpdates\n",
        },
    )
    assert "Tier added." in tier.text
    widget = catalog.get_product_by_repository(session, "makers/widget")
    session.refresh(widget)
    pro = catalog.get_tier_by_slug(session, widget, "pro")
    assert (pro.amount_minor, pro.currency, pro.billing) == (4900, "usd", "month")
    assert (pro.trial_days, pro.seats, pro.features) == (14, 5, ["Support", "Updates"])
    assert sorted(c.slug for c in widget.categories) == ["databases", "web"]
    assert widget.platforms == ["linux/amd64", "linux/arm64"]

    published = submit(
        browser, "/publish/makers/widget", "/publish/makers/widget/status", {"status": "published"}
    )
    assert "Published: it is listed in the store now." in published.text
    session.refresh(widget)
    assert widget.status == "published"
    page = browser.get("/products/makers/widget")
    assert "$49.00 / month" in page.text and "5 seats" in page.text
    assert "Widget Server" in browser.get("/browse", params={"q": "widget"}).text

    unpublished = submit(
        browser, "/publish/makers/widget", "/publish/makers/widget/status", {"status": "draft"}
    )
    assert "Unpublished" in unpublished.text


def test_tier_form_errors_keep_input(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "tierer")
    org = make_org(session, owner, "tierco")
    make_product(session, org, owner, "thing", publish=False)
    login(browser, "tierer")

    bad_price = submit(
        browser,
        "/publish/tierco/thing",
        "/publish/tierco/thing/tiers",
        {"slug": "gold", "name": "Gold", "billing": "year", "price": "49.999", "currency": "usd"},
    )
    assert bad_price.status_code == 422
    assert "Use at most 2 decimals for USD" in bad_price.text
    assert 'id="tier-new-price-error"' in bad_price.text
    assert 'value="49.999"' in bad_price.text and 'value="Gold"' in bad_price.text
    assert '<option value="year" selected>' in bad_price.text

    paid_without_price = submit(
        browser,
        "/publish/tierco/thing",
        "/publish/tierco/thing/tiers",
        {"slug": "gold", "name": "Gold", "billing": "month", "price": "", "currency": "usd"},
    )
    assert paid_without_price.status_code == 422
    assert "A paid tier needs a price above zero" in paid_without_price.text
    assert 'id="tier-new-price-error"' in paid_without_price.text

    bad_url = submit(
        browser,
        "/publish/tierco/thing",
        "/publish/tierco/thing",
        {"title": "Renamed", "docs_url": "ftp://nope"},
    )
    assert bad_url.status_code == 422
    assert "Documentation URL must be an http:// or https:// address" in bad_url.text
    assert 'value="Renamed"' in bad_url.text
    # The half-applied edit was rolled back: the title did not change.
    product = catalog.get_product_by_repository(session, "tierco/thing")
    session.refresh(product)
    assert product.title == "Thing"


def test_edit_and_deactivate_tier(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "editor1")
    org = make_org(session, owner, "editco")
    product = make_product(
        session,
        org,
        owner,
        "tool",
        tiers=[
            {"slug": "free", "billing": "free"},
            {"slug": "pro", "billing": "year", "amount_minor": 1000, "currency": "eur"},
        ],
    )
    login(browser, "editor1")
    page = browser.get("/publish/editco/tool")
    assert 'value="10.00"' in page.text  # the price is pre-filled as a decimal

    saved = submit(
        browser,
        "/publish/editco/tool",
        "/publish/editco/tool/tiers/pro",
        {"name": "Professional", "billing": "year", "price": "120.50", "currency": "eur"},
    )
    assert "Tier saved." in saved.text
    pro = catalog.get_tier_by_slug(session, product, "pro")
    session.refresh(pro)
    assert (pro.name, pro.amount_minor) == ("Professional", 12050)
    assert "€120.50 / year" in browser.get("/products/editco/tool").text

    off = submit(
        browser, "/publish/editco/tool", "/publish/editco/tool/tiers/pro", {"action": "deactivate"}
    )
    assert "Tier deactivated." in off.text
    session.refresh(pro)
    assert pro.active is False
    assert "Professional" not in browser.get("/products/editco/tool").text


def test_members_invite_role_remove(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "boss")
    make_org(session, owner, "crew")
    make_account(session, "helper")
    login(browser, "boss")

    unknown = submit(
        browser, "/publish/crew", "/publish/crew/-/invite", {"username": "ghost", "role": "editor"}
    )
    assert unknown.status_code == 422
    assert "No account named &#39;ghost&#39;" in unknown.text
    assert 'value="ghost"' in unknown.text

    invited = submit(
        browser, "/publish/crew", "/publish/crew/-/invite", {"username": "helper", "role": "viewer"}
    )
    assert "helper is invited as viewer." in invited.text
    assert "Pending invitations" in invited.text

    browser.cookies.clear()
    login(browser, "helper")
    invitation = accounts.pending_invitations(
        session,
        accounts.get_account_by_username(session, "helper"),
    )[0]
    submit(browser, "/my/content", f"/my/invitations/{invitation.id}/accept")
    viewer_page = browser.get("/publish/crew")
    assert viewer_page.status_code == 200
    assert "Invite a member" not in viewer_page.text  # owners only
    browser.cookies.clear()

    login(browser, "boss")
    promoted = submit(
        browser, "/publish/crew", "/publish/crew/-/members/helper/role", {"role": "editor"}
    )
    assert "helper is now editor." in promoted.text
    last_owner = submit(
        browser, "/publish/crew", "/publish/crew/-/members/boss/role", {"role": "viewer"}
    )
    assert last_owner.status_code == 409
    assert "An organization needs at least one owner" in last_owner.text
    removed = submit(browser, "/publish/crew", "/publish/crew/-/members/helper/remove")
    assert "helper is no longer a member of crew." in removed.text


def test_robot_tokens_and_verification(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "robo")
    org = make_org(session, owner, "roboco")
    login(browser, "robo")
    created = submit(
        browser, "/publish/roboco", "/publish/roboco/-/robots", {"name": "ci", "scopes": ["push"]}
    )
    secret = re.search(r"str_[0-9A-Za-z]{36}", created.text)
    assert secret is not None
    assert "will not be shown again" in created.text
    token = accounts.resolve_token(session, secret.group(0))
    assert token is not None and token.organization_id == org.id and token.scopes == ["push"]
    page = browser.get("/publish/roboco")
    assert secret.group(0) not in page.text and token.prefix in page.text

    revoked = submit(browser, "/publish/roboco", f"/publish/roboco/-/robots/{token.id}/revoke")
    assert "Robot token &#39;ci&#39; is revoked." in revoked.text

    requested = submit(browser, "/publish/roboco", "/publish/roboco/-/verification")
    assert "Verification is requested" in requested.text
    session.refresh(org)
    assert org.verification_requested_at is not None


def test_non_members_get_404(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "privowner")
    org = make_org(session, owner, "privco")
    make_product(session, org, owner, "app", publish=False)
    make_account(session, "outsider")
    login(browser, "outsider")
    assert browser.get("/publish/privco").status_code == 404
    assert browser.get("/publish/privco/app").status_code == 404
    assert browser.get("/publish/privco/new").status_code == 404
    response = submit(browser, "/publish", "/publish/privco/-/invite", {"username": "outsider"})
    assert response.status_code == 404


def test_owner_grants_and_revokes(browser: TestClient, session: Session) -> None:
    owner = make_account(session, "granter")
    org = make_org(session, owner, "grantco")
    product = make_product(
        session,
        org,
        owner,
        "suite",
        tiers=[{"slug": "ent", "billing": "year", "amount_minor": 99900}],
    )
    customer = make_account(session, "customer")
    login(browser, "granter")

    granted = submit(
        browser,
        "/publish/grantco/suite",
        "/publish/grantco/suite/grants",
        {"username": "customer", "tier": "ent", "ends_on": "2099-12-31", "reason": "pilot"},
    )
    assert "Access granted to customer." in granted.text
    held = entitlements.entitlements_of(session, customer)
    assert len(held) == 1 and held[0].source == "grant"
    assert held[0].ends_at is not None and held[0].ends_at.year == 2100
    assert "customer" in granted.text and "2100-01-01" in granted.text

    bad_date = submit(
        browser,
        "/publish/grantco/suite",
        "/publish/grantco/suite/grants",
        {"username": "customer", "tier": "ent", "ends_on": "2000-01-01"},
    )
    assert bad_date.status_code == 422
    assert "The end must come after the start" in bad_date.text
    for far in ("9999-12-31", "3000-01-01", "0001-01-01"):
        out_of_range = submit(
            browser,
            "/publish/grantco/suite",
            "/publish/grantco/suite/grants",
            {"username": "customer", "tier": "ent", "ends_on": far},
        )
        assert out_of_range.status_code == 422, (far, out_of_range.status_code)
        assert "Enter a date from 1970-01-01 to before 3000-01-01" in out_of_range.text

    no_reason = submit(
        browser,
        "/publish/grantco/suite",
        f"/publish/grantco/suite/entitlements/{held[0].id}/revoke",
        {"reason": ""},
    )
    assert no_reason.status_code == 422
    assert "Reason is required" in no_reason.text

    revoked = submit(
        browser,
        "/publish/grantco/suite",
        f"/publish/grantco/suite/entitlements/{held[0].id}/revoke",
        {"reason": "pilot over"},
    )
    assert "Access revoked." in revoked.text
    session.refresh(held[0])
    assert held[0].status == "revoked"
    assert product.repository == "grantco/suite"


def test_owner_marks_a_repository_public_on_the_dashboard(
    browser: TestClient, session: Session
) -> None:
    from store.registry import hub

    owner = make_account(session, "repo-owner")
    viewer = make_account(session, "repo-viewer")
    org = make_org(session, owner, "repoco")
    accounts.add_member(
        session, org=org, actor=make_account(session, is_admin=True), account=viewer, role="viewer"
    )
    hub.ensure_repository(session, "repoco/tools")
    session.commit()
    login(browser, "repo-owner")
    page = browser.get("/publish/repoco")
    assert "repoco/tools" in page.text and "Make public" in page.text
    done = submit(
        browser,
        "/publish/repoco",
        "/publish/repoco/-/repositories/visibility",
        {"name": "tools", "visibility": "public"},
    )
    assert "repoco/tools is now public." in done.text
    repo = hub.get_repository(session, "repoco/tools")
    session.refresh(repo)
    assert repo is not None and repo.visibility == "public" and repo.private is False
    bad = submit(
        browser,
        "/publish/repoco",
        "/publish/repoco/-/repositories/visibility",
        {"name": "tools", "visibility": "everyone"},
    )
    assert bad.status_code == 422 and "Visibility must be one of" in bad.text
    browser.post("/logout", data={"csrf_token": ""})
    browser.cookies.clear()
    login(browser, "repo-viewer")
    seen = browser.get("/publish/repoco")
    assert "repoco/tools" in seen.text and "Make private" not in seen.text
    refused = submit(
        browser,
        "/publish/repoco",
        "/publish/repoco/-/repositories/visibility",
        {"name": "tools", "visibility": "private"},
    )
    assert refused.status_code == 403
