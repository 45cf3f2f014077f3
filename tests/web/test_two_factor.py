"""Two-factor sign-in: the service's rules, the pages, and docker login with a password."""

from __future__ import annotations

import base64
import re

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from store.accounts import service as accounts
from store.accounts import two_factor
from store.accounts.models import Account
from store.audit.models import AuditEvent
from store.config import Settings
from store.db import utcnow
from store.errors import ValidationFailed
from store.mail.models import OutboxMessage
from tests.factories import PASSWORD, api_token, auth, make_account, make_org
from tests.web.helpers import HTML, csrf_of, login, submit


def _secret(settings: Settings, account: Account) -> str:
    return two_factor.enrolment(settings, account).secret


def _code(secret: str, shift: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(utcnow()) + shift)


def _enrol(session: Session, settings: Settings, account: Account) -> tuple[str, list[str]]:
    secret = two_factor.begin(session, settings=settings, account=account).secret
    codes = two_factor.confirm(
        session, settings=settings, account=account, code=_code(secret), password=PASSWORD
    )
    return secret, codes


# --- the service --------------------------------------------------------------------------


def test_enrolment_needs_a_code_from_the_new_secret(session: Session, settings: Settings) -> None:
    account = make_account(session, "enrol")
    enrolment = two_factor.begin(session, settings=settings, account=account)
    assert enrolment.uri.startswith("otpauth://totp/store.test:enrol?secret=")
    assert enrolment.qr_svg.startswith("<svg") and "<path" in enrolment.qr_svg
    assert enrolment.secret not in (account.totp_secret or "")  # encrypted at rest
    with pytest.raises(two_factor.BadCode):
        two_factor.confirm(
            session, settings=settings, account=account, code="000000", password=PASSWORD
        )
    assert not two_factor.enabled(account)
    codes = two_factor.confirm(
        session,
        settings=settings,
        account=account,
        code=_code(enrolment.secret),
        password=PASSWORD,
    )
    assert two_factor.enabled(account) and len(codes) == 10 == len(set(codes))
    assert two_factor.recovery_codes_left(session, account) == 10


def test_codes_work_once_and_only_near_now(session: Session, settings: Settings) -> None:
    account = make_account(session, "codes")
    secret, recovery = _enrol(session, settings, account)
    # The confirming code's step is used: the same code again is refused.
    with pytest.raises(two_factor.BadCode):
        two_factor.verify(session, settings=settings, account=account, code=_code(secret))
    assert two_factor.verify(session, settings=settings, account=account, code=_code(secret, 1))
    for far in (-5, 4):
        with pytest.raises(two_factor.BadCode):
            two_factor.verify(session, settings=settings, account=account, code=_code(secret, far))
    for bad in ("", "12345", "abcdef", "1234567", "x" * 500):
        with pytest.raises(two_factor.BadCode):
            two_factor.verify(session, settings=settings, account=account, code=bad)
    # A recovery code works once, with or without its dash and in any case.
    code = recovery[0]
    assert (
        two_factor.verify(
            session, settings=settings, account=account, code=code.replace("-", "").upper()
        )
        == "recovery"
    )
    with pytest.raises(two_factor.BadCode):
        two_factor.verify(session, settings=settings, account=account, code=code)
    assert two_factor.recovery_codes_left(session, account) == 9
    # Codes of one account do nothing for another.
    other = make_account(session, "other")
    _enrol(session, settings, other)
    with pytest.raises(two_factor.BadCode):
        two_factor.verify(session, settings=settings, account=other, code=recovery[1])


def test_disabling_and_new_codes_need_a_code(session: Session, settings: Settings) -> None:
    account = make_account(session, "off")
    secret, recovery = _enrol(session, settings, account)
    with pytest.raises(two_factor.BadCode):
        two_factor.regenerate_codes(session, settings=settings, account=account, code="111111")
    fresh = two_factor.regenerate_codes(
        session, settings=settings, account=account, code=_code(secret, 1)
    )
    with pytest.raises(two_factor.BadCode):  # the old codes no longer work
        two_factor.disable(
            session, settings=settings, account=account, code=recovery[0], password=PASSWORD
        )
    assert two_factor.enabled(account)
    two_factor.disable(
        session, settings=settings, account=account, code=fresh[0], password=PASSWORD
    )
    assert not two_factor.enabled(account) and account.totp_secret is None
    assert two_factor.recovery_codes_left(session, account) == 0


def test_turning_it_off_needs_the_password_too(session: Session, settings: Settings) -> None:
    account = make_account(session, "stolen")
    _, recovery = _enrol(session, settings, account)
    for password in ("", "not-the-password"):
        with pytest.raises(ValidationFailed) as refused:
            two_factor.disable(
                session, settings=settings, account=account, code=recovery[0], password=password
            )
        assert (refused.value.code, refused.value.field) == ("wrong_password", "current_password")
    # The code was not spent by the refusals, and the second factor stays.
    assert two_factor.enabled(account) and two_factor.recovery_codes_left(session, account) == 10
    two_factor.disable(
        session, settings=settings, account=account, code=recovery[0], password=PASSWORD
    )
    assert not two_factor.enabled(account)
    assert session.scalar(
        select(AuditEvent.id).where(
            AuditEvent.action == "account.two_factor_off", AuditEvent.actor_id == account.id
        )
    )
    [mail] = session.scalars(
        select(OutboxMessage).where(
            OutboxMessage.template == "two_factor_off", OutboxMessage.account_id == account.id
        )
    )
    assert "turned off" in mail.subject and "/password/forgot" in mail.text_body


# --- the pages ----------------------------------------------------------------------------


def test_enrol_and_log_in_through_the_pages(
    client: TestClient, session: Session, settings: Settings
) -> None:
    make_account(session, "webby")
    session.commit()
    login(client, "webby")
    page = submit(client, "/my/two-factor", "/my/two-factor/setup", headers=HTML)
    assert page.status_code == 200 and "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret is not None
    wrong = client.post(
        "/my/two-factor/confirm",
        data={"code": "000000", "current_password": PASSWORD, "csrf_token": csrf_of(page.text)},
    )
    assert wrong.status_code == 422 and "That code is not valid" in wrong.text
    done = client.post(
        "/my/two-factor/confirm",
        data={
            "code": _code(secret.group(1)),
            "current_password": PASSWORD,
            "csrf_token": csrf_of(page.text),
        },
    )
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9-]{11})</code></li>", done.text)
    assert len(codes) == 10
    assert done.headers["cache-control"] == "no-store"
    client.post("/logout", data={"csrf_token": csrf_of(done.text)})

    # The password alone does not log in; the code step does.
    response = submit(client, "/login", "/login", {"login": "webby", "password": PASSWORD})
    assert response.url.path == "/login/two-factor" and "authenticator app" in response.text
    assert "Logged in as" not in response.text
    assert client.get("/my/content", headers=HTML).url.path == "/login"
    bad = submit(client, "/login/two-factor", "/login/two-factor", {"code": "000000"})
    assert bad.status_code == 422 and "That code is not valid" in bad.text
    ok = submit(client, "/login/two-factor", "/login/two-factor", {"code": codes[0]})
    assert "Logged in as webby with a recovery code; 9 left" in ok.text
    # Without the form's CSRF token the code step is refused.
    assert client.post("/login/two-factor", data={"code": codes[1]}).status_code == 403


def test_code_step_is_rate_limited(client: TestClient, session: Session) -> None:
    account = make_account(session, "guessed")
    settings = client.app.state.settings  # type: ignore[attr-defined]
    _enrol(session, settings, account)
    session.commit()
    submit(client, "/login", "/login", {"login": "guessed", "password": PASSWORD})
    statuses = []
    for _ in range(12):
        response = submit(client, "/login/two-factor", "/login/two-factor", {"code": "000000"})
        statuses.append(response.status_code)
    assert statuses[0] == 422 and statuses[-1] == 429
    assert "Retry-After" in response.headers


def test_staff_must_set_it_up_when_the_operator_says_so(
    app: FastAPI, session: Session, client: TestClient
) -> None:
    app.state.settings = app.state.settings.model_copy(
        update={"two_factor_required_for_staff": True}
    )
    owner = make_account(session, "owner")
    make_org(session, owner, "ownco")
    make_account(session, "member")
    session.commit()
    login(client, "owner")
    blocked = client.get("/publish", headers=HTML)
    assert blocked.url.path == "/my/two-factor" and "must set up two-factor" in blocked.text
    client.post("/logout", data={"csrf_token": csrf_of(blocked.text)})
    login(client, "member")
    assert client.get("/my/content", headers=HTML).url.path == "/my/content"


# --- docker login -------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_docker_login_with_a_password_is_refused_once_two_factor_is_on(
    client: TestClient, session: Session, settings: Settings
) -> None:
    account = make_account(session, "docker")
    token = accounts.create_token(
        session, kind="personal", name="cli", scopes=["pull"], created_by=account
    ).secret
    session.commit()
    params = {"service": "store-registry"}
    assert (
        client.get("/token", params=params, headers=_basic("docker", PASSWORD)).status_code == 200
    )
    _enrol(session, settings, account)
    session.commit()
    refused = client.get("/token", params=params, headers=_basic("docker", PASSWORD))
    assert refused.status_code == 401
    assert "personal access token" in refused.json()["errors"][0]["message"]
    wrong = client.get("/token", params=params, headers=_basic("docker", "wrong-password"))
    assert wrong.status_code == 401 and "two-factor" not in wrong.text
    assert client.get("/token", params=params, headers=_basic("docker", token)).status_code == 200


def test_api_password_log_in_is_refused_once_two_factor_is_on(
    client: TestClient, session: Session, settings: Settings
) -> None:
    account = make_account(session, "apiuser")
    _enrol(session, settings, account)
    session.commit()
    refused = client.post("/api/v1/auth/token", json={"login": "apiuser", "password": PASSWORD})
    assert refused.status_code == 403 and refused.json()["error"] == "two_factor_required"
    wrong = client.post("/api/v1/auth/token", json={"login": "apiuser", "password": "nope-nope-1"})
    assert wrong.status_code == 401


def test_display_name_change(client: TestClient, session: Session) -> None:
    account = make_account(session, "renamed")
    session.commit()
    login(client, "renamed")
    done = submit(client, "/my/account", "/my/account/profile", {"display_name": "Ren Amed"})
    assert done.status_code == 200 and "display name is changed" in done.text
    session.expire_all()
    assert session.get(Account, account.id).display_name == "Ren Amed"  # type: ignore[union-attr]
    long = submit(client, "/my/account", "/my/account/profile", {"display_name": "x" * 500})
    assert long.status_code == 422
    assert client.post("/my/account/profile", data={"display_name": "y"}).status_code == 403


def test_code_forms_place_errors_and_count_wrong_codes(
    client: TestClient, session: Session, settings: Settings
) -> None:
    account = make_account(session, "careful")
    _, recovery = _enrol(session, settings, account)
    session.commit()
    submit(client, "/login", "/login", {"login": "careful", "password": PASSWORD})
    done = submit(client, "/login/two-factor", "/login/two-factor", {"code": recovery[0]})
    assert "Logged in as careful" in done.text

    # Deleting the account: a wrong code is shown beside the code field, nothing deleted.
    wrong = submit(
        client,
        "/my/account",
        "/my/account/delete",
        {"confirm_username": "careful", "current_password": PASSWORD, "code": "000000"},
    )
    assert wrong.status_code == 422
    assert re.search(r'id="delete-code-error">That code is not valid', wrong.text)
    session.expire_all()
    assert session.get(Account, account.id).deleted_at is None  # type: ignore[union-attr]

    # Turning it off: wrong codes count, and the limit answers 429 with Retry-After.
    statuses = []
    for _ in range(12):
        response = submit(
            client,
            "/my/two-factor",
            "/my/two-factor/disable",
            {"code": "000000", "current_password": PASSWORD},
        )
        statuses.append(response.status_code)
    assert statuses[0] == 422
    assert statuses[-1] == 429 and int(response.headers["Retry-After"]) > 0
    session.expire_all()
    assert two_factor.enabled(session.get(Account, account.id))  # type: ignore[arg-type]


def test_turning_it_off_through_the_page(
    client: TestClient, app: FastAPI, session: Session, settings: Settings
) -> None:
    account = make_account(session, "owner2fa")
    _, recovery = _enrol(session, settings, account)
    session.commit()
    with TestClient(app, base_url="http://store.test", headers=HTML) as other:
        for browser in (client, other):
            submit(browser, "/login", "/login", {"login": "owner2fa", "password": PASSWORD})
            done = submit(
                browser, "/login/two-factor", "/login/two-factor", {"code": recovery.pop()}
            )
            assert "Logged in as owner2fa" in done.text
        # A session and a code are not enough: the password is asked, beside its field.
        no_password = submit(
            client,
            "/my/two-factor",
            "/my/two-factor/disable",
            {"code": recovery[0], "current_password": ""},
        )
        assert no_password.status_code == 422, no_password.text
        assert re.search(
            r'id="disable-current_password-error">The current password', no_password.text
        )
        session.expire_all()
        assert two_factor.enabled(session.get(Account, account.id))  # type: ignore[arg-type]
        off = submit(
            client,
            "/my/two-factor",
            "/my/two-factor/disable",
            {"code": recovery[0], "current_password": PASSWORD},
        )
        assert off.status_code == 200 and "Two-factor sign-in is off" in off.text
        session.expire_all()
        assert not two_factor.enabled(session.get(Account, account.id))  # type: ignore[arg-type]
        # This browser stays logged in; the other session is ended.
        assert client.get("/my/account", follow_redirects=False).status_code == 200
        assert other.get("/my/account", follow_redirects=False).status_code != 200


def test_wrong_passwords_to_turn_it_off_are_limited_with_the_others(
    client: TestClient, session: Session, settings: Settings
) -> None:
    account = make_account(session, "guessing")
    _, recovery = _enrol(session, settings, account)
    session.commit()
    submit(client, "/login", "/login", {"login": "guessing", "password": PASSWORD})
    submit(client, "/login/two-factor", "/login/two-factor", {"code": recovery.pop()})
    statuses = []
    for n in range(12):
        response = submit(
            client,
            "/my/two-factor",
            "/my/two-factor/disable",
            {"code": recovery[0], "current_password": f"guess-{n}"},
        )
        statuses.append(response.status_code)
    assert statuses[0] == 422 and statuses[-1] == 429
    # The current-password limit is the one changing the password answers to as well.
    change = submit(
        client,
        "/my/account",
        "/my/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "another long password",
            "new_password_confirm": "another long password",
        },
    )
    assert change.status_code == 429


def test_api_error_bodies_name_the_input_at_fault(
    client: TestClient, session: Session, settings: Settings
) -> None:
    """The services name the input of a wrong password or code, so the JSON body carries
    ``field`` (as the pages show the error beside that input)."""
    account = make_account(session, "named")
    make_account(session, "other", email="other@example.com")
    token = api_token(session, account)
    _enrol(session, settings, account)
    session.commit()
    headers = auth(token)

    def refused(path: str, body: dict[str, str]) -> tuple[int, str, str]:
        answer = client.post(path, json=body, headers=headers)
        return answer.status_code, answer.json()["error"], answer.json().get("field", "")

    password = {"current_password": "wrong one!", "new_password": "a new password 1"}
    assert refused("/api/v1/me/password", password) == (422, "wrong_password", "current_password")
    email = {"email": "new@example.com", "password": "wrong one!"}
    assert refused("/api/v1/me/email", email) == (422, "wrong_password", "password")
    taken = {"email": "OTHER@example.com", "password": PASSWORD}
    assert refused("/api/v1/me/email", taken) == (409, "email_taken", "email")
    deletion = "/api/v1/me/deletion"
    assert refused(deletion, {"password": "wrong one!"}) == (422, "wrong_password", "password")
    assert refused(deletion, {"password": PASSWORD}) == (422, "two_factor_required", "code")
    wrong_code = {"password": PASSWORD, "code": "000000"}
    assert refused(deletion, wrong_code) == (422, "bad_two_factor_code", "code")
    session.expire_all()
    kept = session.get(Account, account.id)
    assert kept is not None and kept.deleted_at is None and kept.email == "named@example.com"
