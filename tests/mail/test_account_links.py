"""Links by e-mail, read from a real SMTP server: sign-up verification, password reset."""

from __future__ import annotations

import re
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store.accounts import links
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account, AccountToken
from store.config import Settings
from store.db import utcnow
from store.mail import sender
from store.mail.backends import SmtpBackend
from tests.factories import PASSWORD, make_account
from tests.mail.smtp_sink import SmtpSink
from tests.web.helpers import HTML, csrf_of, login, submit

NEW_PASSWORD = "a-brand-new-password-1"


def _deliver(session_factory: sessionmaker[Session], settings: Settings, smtp: SmtpSink) -> None:
    backend = SmtpBackend(
        host="127.0.0.1",
        port=smtp.port,
        security="none",
        username=None,
        password=None,
        timeout=5,
        sender=settings.resolved_mail_from,
    )
    sender.Sender(session_factory, settings, backend=backend).run_once()


def _link(smtp: SmtpSink, count: int, path: str) -> str:
    msg = smtp.wait_for(count)[count - 1]
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    match = re.search(rf"http://store\.test({path}/\S+)", body.get_content())
    assert match, body.get_content()
    return match.group(1)


def test_sign_up_sends_a_verification_link_that_works_once(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    smtp: SmtpSink,
) -> None:
    page = client.get("/signup")
    client.post(
        "/signup",
        data={
            "username": "verity",
            "email": "verity@example.com",
            "display_name": "Verity",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "accept_terms": "on",
            "csrf_token": csrf_of(page.text),
        },
    )
    _deliver(session_factory, settings, smtp)
    [msg] = smtp.wait_for(1)
    assert msg["To"] == "verity@example.com" and "Confirm your e-mail" in msg["Subject"]
    path = _link(smtp, 1, "/verify-email")
    account = session.scalars(select(Account).where(Account.username == "verity")).one()
    assert account.email_verified_at is None
    # Opening the link asks; the button confirms.
    asked = client.get(path, headers=HTML)
    assert asked.status_code == 200 and "verity@example.com" in asked.text
    session.expire_all()
    assert session.get(Account, account.id).email_verified_at is None  # type: ignore[union-attr]
    done = client.post(path, data={"csrf_token": csrf_of(asked.text)}, headers=HTML)
    assert done.status_code == 200 and "is confirmed" in done.text
    session.expire_all()
    assert session.get(Account, account.id).email_verified_at is not None  # type: ignore[union-attr]
    again = client.post(path, data={"csrf_token": csrf_of(asked.text)}, headers=HTML)
    assert again.status_code == 400 and "not valid" in again.text


def test_password_reset_works_once_expires_and_ends_every_session(
    client: TestClient,
    session: Session,
    session_factory: sessionmaker[Session],
    settings: Settings,
    smtp: SmtpSink,
) -> None:
    account = make_account(session, "forgetful")
    refresh = accounts.create_token(
        session, kind="personal", name="cli", scopes=["pull"], created_by=account
    )
    session.commit()
    login(client, "forgetful")  # a session that the reset must end
    other = TestClient(client.app, base_url="http://store.test")

    # Same answer for an unknown address; only the real one gets mail.
    for address in ("nobody@example.com", account.email):
        answer = submit(other, "/password/forgot", "/password/forgot", {"email": address})
        assert answer.status_code == 200 and "If an account has this address" in answer.text
    _deliver(session_factory, settings, smtp)
    [msg] = smtp.wait_for(1)
    assert msg["To"] == account.email
    path = _link(smtp, 1, "/password/reset")

    page = other.get(path, headers=HTML)
    assert page.status_code == 200 and "forgetful" in page.text
    short = other.post(
        path,
        data={"password": "short", "password_confirm": "short", "csrf_token": csrf_of(page.text)},
    )
    assert short.status_code == 422 and "at least 10" in short.text  # the link is not spent
    done = other.post(
        path,
        data={
            "password": NEW_PASSWORD,
            "password_confirm": NEW_PASSWORD,
            "csrf_token": csrf_of(page.text),
        },
        headers=HTML,
    )
    assert done.status_code == 200 and "every session is logged out" in done.text
    # The old session is over; the old password is refused; the new one works.
    assert client.get("/my/content", headers=HTML).url.path == "/login"
    session.expire_all()
    assert accounts.authenticate(session, login="forgetful", password=NEW_PASSWORD)
    token = session.get(AccessToken, refresh.token.id)
    assert token is not None  # personal tokens are the user's own; they stay
    again = other.get(path, headers=HTML)
    assert again.status_code == 400 and "not valid" in again.text
    # A notice of the change goes to the account.
    _deliver(session_factory, settings, smtp)
    assert "was changed" in smtp.wait_for(2)[1]["Subject"]

    # A new link, expired: refused.
    submit(other, "/password/forgot", "/password/forgot", {"email": account.email})
    _deliver(session_factory, settings, smtp)
    late = _link(smtp, 3, "/password/reset")
    session.execute(update(AccountToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    session.commit()
    assert other.get(late, headers=HTML).status_code == 400


def test_reset_requests_are_rate_limited(client: TestClient) -> None:
    statuses = [
        submit(
            client, "/password/forgot", "/password/forgot", {"email": "x@example.com"}
        ).status_code
        for _ in range(4)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    assert client.post("/password/forgot", data={"email": "y@example.com"}).status_code == 403


def test_a_void_link_answers_its_own_page_whichever_button_posts_it(
    client: TestClient, session: Session
) -> None:
    make_account(session, "linked")
    session.commit()
    for action in ("/password/reset/void", "/verify-email/void", "/confirm-email/void"):
        data = {"password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD}
        refused = submit(client, "/login", action, data, headers=HTML)
        assert refused.status_code == 400, action
        assert "This link is not valid" in refused.text
    session.expire_all()
    assert accounts.authenticate(session, login="linked", password=PASSWORD)


def test_reset_form_places_a_mismatch_beside_the_repeat(
    client: TestClient, session: Session
) -> None:
    account = make_account(session, "twice")
    token = links._issue(session, account, "reset", links.RESET_TTL)
    session.commit()
    path = f"/password/reset/{token}"
    mismatch = submit(
        client, path, path, {"password": NEW_PASSWORD, "password_confirm": "something else"}
    )
    assert mismatch.status_code == 422
    assert re.search(r'id="reset-password_confirm-error">The two passwords', mismatch.text)
    assert client.get(path, headers=HTML).status_code == 200  # the link is not spent
