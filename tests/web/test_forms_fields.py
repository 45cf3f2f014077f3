"""A failed form shows the service's error beside the input it names."""

from __future__ import annotations

from starlette.datastructures import FormData

from store.errors import Conflict, StoreError, ValidationFailed
from store.web.forms import FieldErrors, FormState, input_for


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
