"""A failed form shows the service's error beside the input it names."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import PlainTextResponse, Response

from store.accounts.models import Account
from store.errors import (
    Conflict,
    Forbidden,
    NotFound,
    PaymentRequired,
    StoreError,
    TooManyRequests,
    ValidationFailed,
)
from store.web.forms import FieldErrors, FormState, answer, input_for, submit, submit_async
from tests.factories import make_account


def test_the_named_input_or_its_page_name() -> None:
    present = {"slug", "name", "price", "expires_days", "new_password"}
    assert input_for(ValidationFailed("x", field="slug"), present) == "slug"
    assert input_for(Conflict("x", field="slug"), present) == "slug"
    # The service's name for an input the page names otherwise.
    assert input_for(ValidationFailed("x", field="amount_minor"), present) == "price"
    assert input_for(ValidationFailed("x", field="expires_at"), present) == "expires_days"
    assert input_for(ValidationFailed("x", field="password"), present) == "new_password"
    # Several fields: the first the form has.
    assert input_for(ValidationFailed("x", field=["currency", "name"]), present) == "name"
    # No field, or one this form does not have: the error is the form's.
    assert input_for(ValidationFailed("x"), present) == ""
    assert input_for(StoreError("x", field="email"), present) == ""


def test_failed_form_keeps_input_and_places_the_error() -> None:
    form = FormData([("slug", "Bad!"), ("name", "Acme"), ("password", "secret-value")])
    state = FormState.failed("org", form, ValidationFailed("Organization name ...", field="slug"))
    assert state.field_error("org", "slug") == "Organization name ..."
    assert state.field_error("org", "name") == ""
    assert state.error_for("org") == ""  # shown beside its field, not above the form
    assert state.value("org", "slug") == "Bad!"
    assert state.value("org", "password") == ""  # never echoed
    general = FormState.failed("org", form, ValidationFailed("Something else"))
    assert general.error_for("org") == "Something else"
    several = FormState.failed("org", form, FieldErrors({"slug": "bad", "name": "taken"}))
    assert several.field_error("org", "name") == "taken"
    assert several.field_error("org", "slug") == "bad"


def test_an_error_named_by_its_api_field_finds_the_pages_input() -> None:
    """Services name fields as the JSON API does; a page input named otherwise is found
    among the submitted form's inputs."""
    form = FormData([("new_email", "a@example.com"), ("current_password", "x")])
    wrong = ValidationFailed("Not correct", code="wrong_password", field="password")
    placed = FormState.failed("email", form, wrong)
    assert placed.field_error("email", "current_password") == "Not correct"
    assert placed.error_for("email") == ""
    assert placed.code == "wrong_password"
    taken = FormState.failed("email", form, Conflict("Taken", code="email_taken", field="email"))
    assert taken.field_error("email", "new_email") == "Taken" and taken.code == "email_taken"
    # On the password form "password" is the new one (the current one is "current_password").
    both = FormData([("current_password", "x"), ("new_password", "short")])
    short = FormState.failed("password", both, ValidationFailed("Too short", field="password"))
    assert short.field_error("password", "new_password") == "Too short"
    # An error without a field, or naming no input of this form, stays the form's error.
    other = FormState.failed("email", form, Conflict("Busy"))
    assert other.error_for("email") == "Busy" and other.code == "conflict"
    elsewhere = FormState.failed("email", form, ValidationFailed("Bad", field="commit_sha"))
    assert elsewhere.error_for("email") == "Bad" and elsewhere.field == ""
    # Several fields: the first the form has.
    mix = ValidationFailed("Either", field=("percent_off", "amount_off"))
    assert input_for(mix, {"kind", "value"}) == "value"
    assert input_for(mix, {"percent_off", "amount_off"}) == "percent_off"


def _echo(state: FormState, status: int) -> Response:
    return PlainTextResponse(f"{state.name}:{state.field}:{state.error}", status_code=status)


def test_answer_is_done_or_the_page_again_with_the_error_status() -> None:
    form = FormData([("slug", "x")])
    done = answer(form, "org", 7, failed=_echo, done=lambda n: PlainTextResponse(str(n * 6)))
    assert done.body == b"42" and done.status_code == 200
    missing = answer(form, "org", NotFound("No such org", field="slug"), failed=_echo, done=_never)
    # The input was wrong, not the address: 404 re-renders as 422.
    assert missing.status_code == 422 and missing.body == b"org:slug:No such org"


def _never(_: object) -> Response:
    raise AssertionError("done must not run after a refusal")


def test_a_refusal_with_retry_after_says_so_on_the_page() -> None:
    limited = TooManyRequests("Too many", headers={"Retry-After": "90"})
    response = answer(FormData(), "login", limited, failed=_echo, done=_never)
    assert response.status_code == 429 and response.headers["retry-after"] == "90"
    plain = answer(FormData(), "login", ValidationFailed("No"), failed=_echo, done=_never)
    assert "retry-after" not in plain.headers


def test_submit_async_answers_like_submit() -> None:
    async def refuse() -> int:
        raise ValidationFailed("Wrong", field="slug")

    async def accept() -> int:
        return 3

    form = FormData([("slug", "x")])
    refused = asyncio.run(submit_async(form, "org", refuse, failed=_echo, done=_never))
    assert refused.status_code == 422 and refused.body == b"org:slug:Wrong"
    accepted = asyncio.run(
        submit_async(form, "org", accept, failed=_echo, done=lambda n: PlainTextResponse(str(n)))
    )
    assert accepted.body == b"3"


def test_a_refused_form_leaves_nothing_half_written(session: Session) -> None:
    account = make_account(session, "halfway")
    session.commit()

    def rename_then_refuse() -> None:
        account.display_name = "Half written"
        session.flush()
        raise ValidationFailed("Refused after the first change", field="display_name")

    form = FormData([("display_name", "Half written")])
    response = submit(session, form, "profile", rename_then_refuse, failed=_echo, done=_never)
    assert response.status_code == 422
    session.commit()  # the request's transaction still commits
    session.expire_all()
    assert session.get(Account, account.id).display_name != "Half written"  # type: ignore[union-attr]


def test_a_form_may_show_again_an_input_whose_name_is_secret_elsewhere() -> None:
    form = FormData([("code", "SPRING"), ("value", "x")])
    hidden = FormState.failed("coupon", form, ValidationFailed("Bad", field="value"))
    assert hidden.value("coupon", "code") == ""  # a sign-in code by default
    shown = FormState.failed("coupon", form, ValidationFailed("Bad"), public={"code"})
    assert shown.value("coupon", "code") == "SPRING"


def test_a_payment_form_keeps_what_its_refused_action_recorded(session: Session) -> None:
    account = make_account(session, "recorded")
    session.commit()

    def record_then_refuse() -> None:
        account.display_name = "Attempt recorded"
        session.flush()
        raise PaymentRequired("The card was declined")

    form = FormData()
    response = submit(
        session, form, "card", record_then_refuse, failed=_echo, done=_never, undo=False
    )
    assert response.status_code == 402 and response.body == b"card::The card was declined"
    session.commit()
    session.expire_all()
    assert session.get(Account, account.id).display_name == "Attempt recorded"  # type: ignore[union-attr]


def test_errors_that_are_not_the_forms_go_to_the_error_pages(session: Session) -> None:
    def forbidden() -> None:
        raise Forbidden("Not yours")

    with pytest.raises(Forbidden):
        submit(session, FormData(), "card", forbidden, failed=_echo, done=_never, raises={403})
    shown = submit(session, FormData(), "card", forbidden, failed=_echo, done=_never)
    assert shown.status_code == 403 and shown.body == b"card::Not yours"
