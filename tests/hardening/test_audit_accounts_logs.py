"""The secret of a link by e-mail (password reset, address verification, change of address,
unsubscribe) is in its path: the access log names the route instead, so whoever reads the
logs cannot reset a password with a link still unused."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import links
from store.config import Settings
from store.mail.models import OutboxMessage
from tests.factories import PASSWORD, make_account
from tests.web.helpers import HTML


def _secret(session: Session, template: str, path: str) -> str:
    body = session.scalars(
        select(OutboxMessage.text_body).where(OutboxMessage.template == template)
    ).one()
    match = re.search(rf"{path}/(\S+)", body)
    assert match, body
    return match.group(1)


def test_the_access_log_never_holds_a_link_secret(
    client: TestClient, session: Session, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    account = make_account(session, "logged", email_verified=False)
    links.request_password_reset(session, settings=settings, address=account.email)
    links.send_verification(session, settings=settings, account=account)
    links.request_email_change(
        session,
        settings=settings,
        account=account,
        new_address="elsewhere@example.com",
        password=PASSWORD,
    )
    session.commit()
    paths = {
        "/password/reset": _secret(session, "password_reset", "/password/reset"),
        "/verify-email": _secret(session, "verify_email", "/verify-email"),
        "/confirm-email": _secret(session, "email_change", "/confirm-email"),
    }

    with caplog.at_level(logging.INFO, logger="store.access"):
        for path, secret in paths.items():
            page = client.get(f"{path}/{secret}", headers=HTML)
            assert page.status_code == 200, page.text
            # A refused post (no CSRF token) is logged as well.
            assert client.post(f"{path}/{secret}").status_code == 403
    lines = [r for r in caplog.records if r.name == "store.access"]
    assert len(lines) >= 2 * len(paths)
    logged = "\n".join(f"{r.getMessage()} {sorted(map(str, vars(r).values()))}" for r in lines)
    for path, secret in paths.items():
        assert secret not in logged
        assert f"{path}/{{token}}" in logged  # the route is still told
