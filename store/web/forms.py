"""Form parsing for the pages: read fields, convert them, and keep input for re-rendering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, ImmutableMultiDict
from starlette.responses import Response

from store import validation
from store.catalog import money
from store.errors import StoreError, ValidationFailed
from store.web.csrf import FIELD as CSRF_FIELD
from store.web.templating import flash, minor_exponent, redirect

T = TypeVar("T")
# What a form submitted: its fields (a POST's form, or a GET page's query).
Submitted = ImmutableMultiDict[str, Any]
# Never echoed back into a re-rendered form.
_SECRET_FIELDS = frozenset(
    {
        CSRF_FIELD,
        "card_number",
        "cvc",
        "password",
        "password_confirm",
        "current_password",
        "new_password",
        "new_password_confirm",
        "code",
    }
)


def _secret(value: str) -> bool:
    """A pasted private key (PEM, OpenSSH, cosign): refused input that must not be echoed."""
    return "PRIVATE KEY" in value.upper()


async def _form(request: Request) -> FormData:
    return await request.form()


# The submitted form (already read by the CSRF check, so read once).
Form = Annotated[FormData, Depends(_form)]


class FieldErrors(ValidationFailed):
    """Several fields wrong at once: every message is shown beside its field."""

    def __init__(self, errors: dict[str, str], *, status_code: int = 422) -> None:
        first = next(iter(errors.values()))
        super().__init__(
            first if len(errors) == 1 else f"Correct the {len(errors)} fields marked",
            field=list(errors),
        )
        self.errors = dict(errors)
        self.status_code = status_code


class FormState:
    """The outcome of a failed submission of one named form on a page.

    Templates ask it for each field's value (the user's input wins over the default) and
    error; forms on the same page that were not submitted keep their defaults.
    """

    def __init__(
        self,
        name: str = "",
        values: dict[str, list[str]] | None = None,
        error: str = "",
        field: str = "",
        errors: dict[str, str] | None = None,
        code: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.values = values or {}
        self.error = error
        self.field = field
        self.errors = errors or {}
        # The error's stable code, for a page that answers one kind of refusal otherwise.
        self.code = code
        # What else the error says (as the JSON error body: a purchase's manage_url).
        self.extra = dict(extra or {})

    @classmethod
    def failed(
        cls,
        name: str,
        form: Submitted,
        exc: StoreError,
        public: Collection[str] = (),
    ) -> FormState:
        """The error goes beside the input it names (``input_for``), else above the form.
        ``public`` names inputs shown again although such names are secret elsewhere (a
        coupon's ``code`` is not a sign-in code)."""
        secret = _SECRET_FIELDS.difference(public)
        values: dict[str, list[str]] = {}
        for key, value in form.multi_items():
            if key not in secret and isinstance(value, str) and not _secret(value):
                values.setdefault(key, []).append(value)
        extra = {k: v for k, v in exc.extra.items() if k != "headers"}
        if isinstance(exc, FieldErrors):
            return cls(name, values, exc.detail, "", dict(exc.errors), exc.code, extra)
        field = input_for(exc, set(form.keys()))
        return cls(name, values, exc.detail, field, code=exc.code, extra=extra)

    def submitted(self, name: str) -> bool:
        return bool(self.name) and self.name == name

    def value(self, name: str, field: str, default: object = "") -> str:
        if self.submitted(name):
            return self.values.get(field, [""])[-1]
        return "" if default is None else str(default)

    def values_of(self, name: str, field: str, default: Iterable[str] = ()) -> list[str]:
        if self.submitted(name):
            return self.values.get(field, [])
        return list(default)

    def checked(self, name: str, field: str, default: bool = False) -> bool:
        if self.submitted(name):
            return field in self.values
        return default

    def error_for(self, name: str) -> str:
        return self.error if self.submitted(name) and not self.field else ""

    def field_error(self, name: str, field: str) -> str:
        if not self.submitted(name):
            return ""
        if self.errors:
            return self.errors.get(field, "")
        return self.error if self.field == field else ""

    def any_error(self, name: str) -> str:
        return self.error if self.submitted(name) else ""


NO_FORM = FormState()

# Services name an error's field as the JSON API does; a page whose input carries another
# name (a price typed in units, an expiry in days, a date, the current password) is listed
# here, the names tried in order among the submitted form's inputs.
_INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "password": ("new_password", "current_password"),
    "email": ("new_email",),
    "amount_minor": ("price",),
    "expires_at": ("expires_days", "expires"),
    "percent_off": ("value",),
    "amount_off": ("value",),
    "duration_months": ("months",),
    "ends_at": ("ends_on",),
    "schedule_minutes": ("schedule",),
    "timeout_seconds": ("timeout",),
    "commit_sha": ("commit",),
}


def input_for(exc: StoreError, present: set[str]) -> str:
    """The input of the submitted form the error is about ("" when none of its fields is)."""
    for field in exc.fields:
        for name in (field, *_INPUT_NAMES.get(field, ())):
            if name in present:
                return name
    return ""


def error_status(exc: StoreError) -> int:
    """The status a re-rendered form answers with: the input was wrong, not the address."""
    return {401: 400, 404: 422}.get(exc.status_code, exc.status_code)


def attempt(session: Session, action: Callable[[], T], *, undo: bool = True) -> T | StoreError:
    """Run a service call in a savepoint: on a StoreError its partial changes are undone
    (the request still commits, so a re-rendered form must not carry half an edit). With
    ``undo=False`` what it wrote stays: a payment the gateway was asked for and refused is
    a record the service keeps on purpose (a failed charge, its notice)."""
    try:
        if not undo:
            return action()
        with session.begin_nested():
            return action()
    except StoreError as exc:
        return exc


Failed = Callable[[FormState, int], Response]


def submit(
    session: Session,
    form: Submitted,
    name: str,
    action: Callable[[], T],
    *,
    failed: Failed,
    done: Callable[[T], Response],
    public: Collection[str] = (),
    undo: bool = True,
    raises: Collection[int] = (),
) -> Response:
    """Every page form: run ``action`` in a savepoint (``attempt``, and ``undo`` there);
    when it raises a StoreError, ``failed`` re-renders the page with the input kept and the
    error beside its field (form ``name``; ``public`` as for
    ``FormState.failed``), answering with ``error_status``; else ``done`` answers, usually
    a flash and a redirect (``redirect_with``). Errors with a status in ``raises`` are not
    the form's to show: they go to the error pages. ``form`` may be a GET page's query (a
    preview whose inputs are checked); ``done`` runs after the savepoint, so it may commit
    (an order recorded before the gateway is asked to charge)."""
    result = attempt(session, action, undo=undo)
    if isinstance(result, StoreError) and result.status_code in raises:
        raise result
    return answer(form, name, result, failed=failed, done=done, public=public)


async def submit_async(
    form: Submitted,
    name: str,
    action: Callable[[], Awaitable[T]],
    *,
    failed: Failed,
    done: Callable[[T], Response],
    public: Collection[str] = (),
) -> Response:
    """``submit`` for a form whose action runs its own transactions (logging in): no
    request session, so no savepoint."""
    try:
        result: T | StoreError = await action()
    except StoreError as exc:
        result = exc
    return answer(form, name, result, failed=failed, done=done, public=public)


def answer(
    form: Submitted,
    name: str,
    result: T | StoreError,
    *,
    failed: Failed,
    done: Callable[[T], Response],
    public: Collection[str] = (),
) -> Response:
    """The answer to a submitted form once its action ran: ``done`` with what it returned,
    or ``failed`` with the form as submitted and the error placed. A refusal that tells the
    client when to come back (429, Retry-After) says so on the re-rendered page too."""
    if not isinstance(result, StoreError):
        return done(result)
    state = FormState.failed(name, form, result, public)
    response = failed(state, error_status(result))
    headers = result.extra.get("headers") if result.extra else None
    if isinstance(headers, Mapping):
        response.headers.update(headers)
    return response


def refused_back(request: Request, url: str) -> Failed:
    """``failed`` for button forms (nothing typed to show again): the refusal is flashed
    on the page they came from."""

    def back(state: FormState, _status: int) -> Response:
        return redirect_with(request, state.error, url, "error")

    return back


def redirect_with(request: Request, message: str, url: str, category: str = "success") -> Response:
    """Say what was done on the next page, and go there (POST, redirect, GET)."""
    flash(request, message, category)
    return redirect(url)


# --- field readers --------------------------------------------------------------------


def text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


def checkbox(form: FormData, key: str) -> bool:
    return text(form, key) not in ("", "0", "off", "false")


def choices(form: FormData, key: str) -> list[str]:
    return [v for v in form.getlist(key) if isinstance(v, str)]


def split_list(value: str) -> list[str]:
    """Comma- or line-separated values, blanks dropped."""
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def optional_int(form: FormData, key: str, *, what: str, low: int, high: int) -> int | None:
    raw = text(form, key).strip()
    if not raw:
        return None
    try:
        number = int(raw)
    except ValueError:
        raise ValidationFailed(f"{what} must be a whole number", field=key) from None
    if not low <= number <= high:
        raise ValidationFailed(f"{what} must be between {low} and {high}", field=key)
    return number


def price_minor(raw: str, currency: str, *, field: str = "price") -> int:
    """ "49.00" in usd → 4900; "1,500" in jpy → 1500. Blank is zero."""
    return money.parse_amount(raw, currency, what="The price", field=field) or 0


def price_text(amount_minor: int, currency: str) -> str:
    """The inverse of price_minor, for pre-filling an edit form."""
    exponent = minor_exponent(currency)
    return f"{Decimal(amount_minor).scaleb(-exponent):.{exponent}f}"


def end_of_day(form: FormData, key: str) -> datetime | None:
    """An optional YYYY-MM-DD date: access runs through that whole day (UTC)."""
    raw = text(form, key).strip()
    if not raw:
        return None
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").date()
    except ValueError:
        raise ValidationFailed("Enter the date as YYYY-MM-DD", field=key) from None
    if not validation.EARLIEST.date() <= day < validation.LATEST.date():
        raise ValidationFailed(
            f"Enter a date from {validation.EARLIEST:%Y-%m-%d} to before "
            f"{validation.LATEST:%Y-%m-%d}",
            field=key,
        )
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


def expiry(form: FormData, key: str = "expires_days") -> datetime | None:
    days = optional_int(form, key, what="Expiry", low=1, high=3650)
    return None if days is None else datetime.now(UTC) + timedelta(days=days)
