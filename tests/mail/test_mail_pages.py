"""Notice preferences, one-click unsubscribe and the administrators' outbox pages."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.config import Settings
from store.mail import outbox, service
from store.mail.models import OutboxMessage
from tests.factories import make_account, make_admin
from tests.web.helpers import HTML, login, submit


def test_preferences_page_turns_categories_off_and_on(client: TestClient, session: Session) -> None:
    account = make_account(session, "prefs")
    session.commit()
    login(client, "prefs")
    page = client.get("/my/notifications", headers=HTML)
    assert page.status_code == 200 and 'value="sales" checked' in page.text
    saved = submit(client, "/my/notifications", "/my/notifications", {"notices": ["reviews"]})
    assert saved.status_code == 200 and "saved" in saved.text
    assert service.preferences(session, account) == {
        "sales": False,
        "reviews": True,
        "renewals": False,
    }
    # Without the form's CSRF token nothing changes.
    refused = client.post("/my/notifications", data={"notices": ["sales"]})
    assert refused.status_code == 403
    assert service.preferences(session, account)["sales"] is False


def test_one_click_unsubscribe(client: TestClient, session: Session, settings: Settings) -> None:
    account = make_account(session, "clicker")
    outbox.enqueue(session, settings=settings, template="test", account=account, category="sales")
    session.commit()
    row = session.scalars(select(OutboxMessage)).one()
    path = row.headers["List-Unsubscribe"].strip("<>").removeprefix("http://store.test")
    # Opening the link asks first; a link checker changes nothing.
    asked = client.get(path, headers=HTML)
    assert asked.status_code == 200 and "Stop e-mails about: New sales" in asked.text
    assert service.preferences(session, account)["sales"] is True
    # The mail client's one-click POST (RFC 8058): no session, no CSRF token.
    done = client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and "no longer receive" in done.text
    assert service.preferences(session, account)["sales"] is False
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    forged = client.post(path[:-3] + "abc", headers=HTML)
    assert forged.status_code == 422 and "not valid" in forged.text


def test_admin_outbox_lists_failures_and_retries(
    client: TestClient, session: Session, settings: Settings
) -> None:
    make_admin(session)
    message_id = outbox.enqueue(session, settings=settings, template="test", to="x@example.com")
    row = session.get(OutboxMessage, message_id)
    assert row is not None
    row.status, row.attempts, row.last_error = "failed", 10, "550 no such mailbox"
    session.commit()
    login(client, "root-admin")
    page = client.get("/admin/mail?failed=1", headers=HTML)
    assert page.status_code == 200
    assert "550 no such mailbox" in page.text and "x@example.com" in page.text
    retried = submit(client, "/admin/mail?failed=1", f"/admin/mail/{message_id}/retry")
    assert retried.status_code == 200 and "queued again" in retried.text
    session.refresh(row)
    assert row.status == "pending" and row.attempts == 0
    # A message that is not failed is not sent again.
    again = submit(client, "/admin/mail", f"/admin/mail/{message_id}/retry", headers=HTML)
    assert again.status_code == 409 and "Only failed messages" in again.text


def test_outbox_pages_are_for_administrators(client: TestClient, session: Session) -> None:
    make_account(session, "plain")
    session.commit()
    login(client, "plain")
    assert client.get("/admin/mail", headers=HTML).status_code == 403
