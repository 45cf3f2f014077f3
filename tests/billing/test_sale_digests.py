"""Sale notices: a mail per sale (the default), one daily digest, or none, chosen by each
owner and finance member for each organization; on SQLite and PostgreSQL. A sale is told to
each person once: alone or in a digest, never both; one digest a person a day however often
the digests run; a day without sales mails nothing; a sale paid after the day's digest went
out is in the next one."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts.models import Account
from store.billing import notices, orders, sale_notices
from store.billing.models import Order, SaleNotice, SaleNoticePreference
from store.billing.runtime import Billing
from store.config import Settings
from store.db import utcnow
from store.mail import service as mail_service
from store.mail.models import OutboxMessage
from tests.billing.conftest import Shop
from tests.billing.helpers import make_event, post_event
from tests.billing.test_webhooks import intent, pending_order
from tests.factories import api_token, auth, make_account
from tests.web.helpers import login, submit

DAY = timedelta(days=1)


def _finance(session: Session, shop: Shop, name: str | None = None) -> Account:
    person = make_account(session, name)
    accounts.add_member(session, org=shop.org, actor=shop.admin, account=person, role="finance")
    return person


def _paid(
    session: Session, settings: Settings, billing: Billing, shop: Shop, at: datetime
) -> Order:
    """A paid sale of the shop's product at ``at``, told as a payment tells it."""
    buyer = make_account(session)
    order = orders.start_checkout(session, billing, account=buyer, tier=shop.one_time)
    order.status, order.paid_at = "paid", at
    session.flush()
    notices.new_sale(session, settings, order=order)
    return order


def _mails(session: Session, template: str, to: Account) -> list[OutboxMessage]:
    session.expire_all()
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template, OutboxMessage.account_id == to.id)
            .order_by(OutboxMessage.created_at)
        )
    )


def _digests(session: Session, settings: Settings, now: datetime) -> int:
    """What ``store mail digests`` does, at ``now``: how many digests were queued."""
    queued = 0
    for account_id, organization_id in sale_notices.digest_recipients(session):
        told = sale_notices.send_digest(
            session, settings, account_id=account_id, organization_id=organization_id, now=now
        )
        queued += told > 0
    return queued


def _noon(days_ago: int) -> datetime:
    today = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    return today - days_ago * DAY


def test_each_person_chooses_a_mail_per_sale_a_digest_or_none(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    daily, silent = _finance(session, shop), _finance(session, shop)
    sale_notices.choose(session, account=daily, organization=shop.org.slug, mode="daily")
    sale_notices.choose(session, account=silent, organization=shop.org.slug, mode="none")
    for pref in session.scalars(select(SaleNoticePreference)):
        pref.since = _noon(3)  # chosen before the sales
    first = _paid(session, settings, billing, shop, _noon(1))
    _paid(session, settings, billing, shop, _noon(1) + timedelta(hours=2))
    # the owner (no choice: a mail per sale) hears at once, the others do not
    assert len(_mails(session, "new_sale", shop.publisher)) == 2
    assert _mails(session, "new_sale", daily) == _mails(session, "new_sale", silent) == []

    today = _noon(0)
    assert _digests(session, settings, today) == 1
    [digest] = _mails(session, "sales_digest", daily)
    assert digest.category == "sales" and "List-Unsubscribe" in digest.headers
    day = f"{today - DAY:%Y-%m-%d}"
    assert digest.subject == f"Sales of {shop.org.name} on {day}: 2"
    assert digest.text_body.count(shop.product.title) == 2 and "$198.00 in all" in digest.text_body
    assert digest.dedupe_key == sale_notices.digest_key(daily.id, shop.org.id, day)
    assert "<table>" in digest.html_body and "/my/notifications" in digest.text_body
    # run again the same day (later, too): nothing more; nobody else gets a digest
    assert _digests(session, settings, today + timedelta(hours=10)) == 0
    assert _mails(session, "sales_digest", silent) == []
    assert _mails(session, "sales_digest", shop.publisher) == []
    told = session.scalars(select(SaleNotice).where(SaleNotice.order_id == first.id)).all()
    assert {(t.account_id, t.digest_day) for t in told} == {
        (shop.publisher.id, None), (daily.id, day),
    }  # fmt: skip


def test_a_sale_mailed_alone_is_never_in_a_digest(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    _paid(session, settings, billing, shop, _noon(1))
    assert len(_mails(session, "new_sale", shop.publisher)) == 1
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug, mode="daily")
    # even with the choice dated before the sale, the sale was told: no digest
    session.scalars(select(SaleNoticePreference)).one().since = _noon(5)
    assert _digests(session, settings, _noon(0)) == 0
    assert _mails(session, "sales_digest", shop.publisher) == []


def test_a_day_without_sales_mails_nothing_and_a_late_sale_waits_for_the_next_digest(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug, mode="daily")
    session.scalars(select(SaleNoticePreference)).one().since = _noon(5)
    assert _digests(session, settings, _noon(0)) == 0  # no sales: no mail
    _paid(session, settings, billing, shop, _noon(1))
    assert _digests(session, settings, _noon(0)) == 1
    # a payment of yesterday that committed after today's digest was queued
    late = _paid(session, settings, billing, shop, _noon(1) + timedelta(hours=11))
    assert _digests(session, settings, _noon(0) + timedelta(hours=6)) == 0
    assert _digests(session, settings, _noon(-1)) == 1  # tomorrow's digest tells it
    first, second = _mails(session, "sales_digest", shop.publisher)
    assert ": 1" in first.subject and ": 1" in second.subject
    assert second.dedupe_key.endswith(f"{_noon(0):%Y-%m-%d}")  # type: ignore[union-attr]
    assert session.get(SaleNotice, (late.id, shop.publisher.id)) is not None
    assert _mails(session, "new_sale", shop.publisher) == []


def test_sales_turned_off_or_a_member_no_longer_finance_get_no_digest(
    session: Session, settings: Settings, billing: Billing, shop: Shop
) -> None:
    person = _finance(session, shop)
    sale_notices.choose(session, account=person, organization=shop.org.slug, mode="daily")
    session.scalars(select(SaleNoticePreference)).one().since = _noon(5)
    _paid(session, settings, billing, shop, _noon(1))
    mail_service.set_preferences(session, account=person, wanted={"reviews"})
    assert _digests(session, settings, _noon(0)) == 0
    assert session.scalar(select(SaleNotice).where(SaleNotice.account_id == person.id)) is None
    mail_service.set_preferences(session, account=person, wanted={"sales"})
    accounts.change_role(
        session, org=shop.org, actor=shop.publisher, username=person.username, role="viewer"
    )
    assert _digests(session, settings, _noon(0)) == 0


def test_a_daily_seller_hears_of_a_webhook_paid_sale_only_in_the_digest(
    client: TestClient, session: Session, billing: Billing, shop: Shop
) -> None:
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug, mode="daily")
    session.commit()
    order = pending_order(session, billing, shop)
    event = make_event("payment_intent.succeeded", intent(order))
    assert post_event(client, event).status_code == 200
    assert post_event(client, event).status_code == 200
    assert _mails(session, "new_sale", shop.publisher) == []
    assert _mails(session, "receipt", shop.buyer)  # the buyer's receipt is unchanged


@pytest.mark.parametrize(
    ("mode", "organization", "status", "code"),
    [
        ("weekly", None, 422, None),
        ("daily", "no-such-org", 404, "no_such_organization"),
    ],
)
def test_the_api_sets_the_choice_and_refuses_bad_ones(
    client: TestClient,
    session: Session,
    shop: Shop,
    mode: str,
    organization: str | None,
    status: int,
    code: str | None,
) -> None:
    token = api_token(session, shop.publisher)
    viewer = make_account(session)
    accounts.add_member(session, org=shop.org, actor=shop.admin, account=viewer, role="viewer")
    viewer_token = api_token(session, viewer)
    session.commit()
    listed = client.get("/api/v1/me/notifications/sales", headers=auth(token))
    assert listed.status_code == 200
    assert listed.json() == [{"organization": shop.org.slug, "mode": "each"}]
    assert client.get("/api/v1/me/notifications/sales", headers=auth(viewer_token)).json() == []
    url = f"/api/v1/me/notifications/sales/{organization or shop.org.slug}"
    bad = client.put(url, json={"mode": mode}, headers=auth(token))
    assert bad.status_code == status, bad.text
    if code:
        assert bad.json()["error"] == code
    # a viewer hears of no sales and may not choose
    refused = client.put(
        f"/api/v1/me/notifications/sales/{shop.org.slug}",
        json={"mode": "daily"},
        headers=auth(viewer_token),
    )
    assert refused.status_code == 404
    chosen = client.put(
        f"/api/v1/me/notifications/sales/{shop.org.slug}",
        json={"mode": "daily"},
        headers=auth(token),
    )
    assert chosen.status_code == 200 and chosen.json()["mode"] == "daily"
    pref = session.get(SaleNoticePreference, (shop.publisher.id, shop.org.id))
    assert pref is not None and pref.mode == "daily"
    assert client.put(url, json={"mode": "daily"}).status_code == 401


def test_the_notifications_page_sets_the_choice(
    client: TestClient, session: Session, shop: Shop
) -> None:
    session.commit()
    login(client, shop.publisher.username)
    page = client.get("/my/notifications")
    assert page.status_code == 200 and "Sales of your organizations" in page.text
    assert f'id="sales-{shop.org.slug}-mode"' in page.text
    form = {"organization": shop.org.slug, "mode": "fortnightly"}
    bad = submit(client, "/my/notifications", "/my/notifications/sales", form)
    assert bad.status_code == 422
    assert "is not a choice" in bad.text and 'aria-invalid="true"' in bad.text
    assert session.get(SaleNoticePreference, (shop.publisher.id, shop.org.id)) is None
    other = submit(client, "/my/notifications", "/my/notifications/sales",
                   {"organization": "elsewhere", "mode": "daily"})  # fmt: skip
    assert other.status_code == 422 and "not an owner or finance member" in other.text
    saved = submit(client, "/my/notifications", "/my/notifications/sales",
                   {"organization": shop.org.slug, "mode": "daily"})  # fmt: skip
    assert saved.status_code == 200 and "one digest a day." in saved.text
    assert '<option value="daily" selected>' in saved.text
    session.expire_all()
    pref = session.get(SaleNoticePreference, (shop.publisher.id, shop.org.id))
    assert pref is not None and pref.mode == "daily"
    # without the CSRF token: refused, nothing changes
    forged = client.post(
        "/my/notifications/sales", data={"organization": shop.org.slug, "mode": "none"}
    )
    assert forged.status_code in (400, 403)
    session.expire_all()
    assert session.get(SaleNoticePreference, (shop.publisher.id, shop.org.id)).mode == "daily"  # type: ignore[union-attr]


def test_choices_only_change_since_when_the_mode_changes(session: Session, shop: Shop) -> None:
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug, mode="daily")
    pref = session.get(SaleNoticePreference, (shop.publisher.id, shop.org.id))
    assert pref is not None
    pref.since = _noon(4)
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug.upper(),
                        mode="daily")  # fmt: skip
    assert pref.since == _noon(4)
    sale_notices.choose(session, account=shop.publisher, organization=shop.org.slug, mode="each")
    assert pref.since > _noon(1)
