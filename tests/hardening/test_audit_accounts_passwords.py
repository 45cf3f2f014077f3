"""The current password asked by a logged-in account's forms (changing it, deleting the
account) is limited as log-ins are: whoever holds a session or an ``api`` token, but not
the password, cannot guess it there without bound. Wrong passwords stay counted, the rest
of the attempts are given back, and the limit answers 429 with Retry-After."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from store import security
from store.accounts.models import Account
from tests.factories import PASSWORD, api_token, auth, make_account
from tests.web.helpers import login, submit

NEW_PASSWORD = "a-brand-new-password-1"
TRIES = 12  # more than the failed log-in limit (10)


def _password_is(session: Session, account: Account, password: str) -> bool:
    session.expire_all()
    fresh = session.get(Account, account.id)
    return fresh is not None and security.verify_password(fresh.password_hash, password)


def test_guessing_the_current_password_in_the_settings_is_limited(
    client: TestClient, session: Session
) -> None:
    account = make_account(session, "settings-guess")
    session.commit()
    login(client, account.username)

    # Right passwords give their attempt back: changing it twice is not a guess.
    for current, new in ((PASSWORD, NEW_PASSWORD), (NEW_PASSWORD, PASSWORD)):
        changed = submit(
            client,
            "/my/account",
            "/my/account/password",
            {
                "current_password": current,
                "new_password": new,
                "new_password_confirm": new,
            },
        )
        assert changed.status_code == 200, changed.text

    statuses = []
    for n in range(TRIES):
        response = submit(
            client,
            "/my/account",
            "/my/account/password",
            {
                "current_password": f"guess {n}",
                "new_password": NEW_PASSWORD,
                "new_password_confirm": NEW_PASSWORD,
            },
        )
        statuses.append(response.status_code)
    assert statuses[0] == 422 and statuses[-1] == 429, statuses
    assert int(response.headers["Retry-After"]) > 0

    # Once over the limit the right password is not even checked.
    right = submit(
        client,
        "/my/account",
        "/my/account/password",
        {
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_confirm": NEW_PASSWORD,
        },
    )
    assert right.status_code == 429
    assert _password_is(session, account, PASSWORD)

    # Deleting the account asks the same password: the same limit.
    deletion = submit(
        client,
        "/my/account",
        "/my/account/delete",
        {"confirm_username": account.username, "current_password": PASSWORD},
    )
    assert deletion.status_code == 429
    session.expire_all()
    assert session.get(Account, account.id).deleted_at is None  # type: ignore[union-attr]


def test_guessing_the_current_password_through_the_api_is_limited(
    client: TestClient, session: Session
) -> None:
    account = make_account(session, "api-guess")
    token = api_token(session, account)
    session.commit()

    statuses = []
    for n in range(TRIES):
        response = client.post(
            "/api/v1/me/password",
            json={"current_password": f"guess {n}", "new_password": NEW_PASSWORD},
            headers=auth(token),
        )
        statuses.append(response.status_code)
    assert statuses[0] == 422 and statuses[-1] == 429, statuses
    assert int(response.headers["Retry-After"]) > 0
    deletion = client.post("/api/v1/me/deletion", json={"password": PASSWORD}, headers=auth(token))
    assert deletion.status_code == 429
    right = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=auth(token),
    )
    assert right.status_code == 429
    assert _password_is(session, account, PASSWORD)
