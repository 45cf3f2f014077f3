"""Shared validators: registry-compatible names, e-mail addresses, URLs."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from store.errors import ValidationFailed

# Dates the store accepts from users: far enough for any contract, near enough that adding
# a grace period or a renewal never leaves Python's calendar (year 9999) or a database's.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)

# distribution's path-component grammar: lowercase alphanumerics separated by ".", "_", "__"
# or runs of "-".
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
RESERVED_NAMES = frozenset(
    {
        "admin",
        "api",
        "anonymous",
        "license",
        "licenses",
        "library",
        "login",
        "logout",
        "robot",
        "root",
        "signup",
        "static",
        "store",
        "support",
        "system",
        "token",
        "v1",
        "v2",
    }
)


def registry_component(
    value: str, *, what: str, min_len: int = 2, max_len: int = 64, field: str | None = None
) -> str:
    value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise ValidationFailed(
            f"{what} must be {min_len} to {max_len} characters long", field=field
        )
    if not _COMPONENT.match(value):
        raise ValidationFailed(
            f"{what} may use lowercase letters, digits and single '.', '_' or '-' between them",
            field=field,
        )
    return value


def username(value: str, *, field: str = "username") -> str:
    value = registry_component(value, what="Username", min_len=3, max_len=39, field=field)
    if value in RESERVED_NAMES:
        raise ValidationFailed(f"The username '{value}' is reserved", field=field)
    return value


def namespace(value: str, *, field: str = "slug") -> str:
    value = registry_component(value, what="Organization name", min_len=2, max_len=64, field=field)
    if value in RESERVED_NAMES:
        raise ValidationFailed(f"The namespace '{value}' is reserved", field=field)
    return value


def email(value: str, *, field: str = "email") -> str:
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValidationFailed("Enter a valid e-mail address", field=field)
    return value


def password(value: str, *, field: str = "password") -> str:
    if len(value) < 10:
        raise ValidationFailed("Passwords must be at least 10 characters long", field=field)
    if len(value) > 256:
        raise ValidationFailed("Passwords must be at most 256 characters long", field=field)
    return value


def optional_url(value: str | None, *, what: str, field: str | None = None) -> str:
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > 500 or not re.match(r"^https?://[^\s<>\"']+$", value):
        raise ValidationFailed(f"{what} must be an http:// or https:// address", field=field)
    return value


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: a name
# that carries one can break a mail header or forge a log line. Text of several lines
# (descriptions, reasons, notes) keeps line breaks and tabs, nothing else of them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_IN_LINES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]")


def text(
    value: str | None,
    *,
    what: str,
    max_len: int,
    required: bool = False,
    field: str | None = None,
    lines: bool = False,
) -> str:
    """Free text from a user, trimmed: one line (a name, a title) unless ``lines``. Control
    characters are refused (422 ``control_characters``): a line break, a tab, an escape
    sequence in a name would reach mail headers and logs; ``lines`` allows line breaks and
    tabs."""
    value = (value or "").strip()
    if required and not value:
        raise ValidationFailed(f"{what} is required", field=field)
    if len(value) > max_len:
        raise ValidationFailed(f"{what} must be at most {max_len} characters long", field=field)
    if (_CONTROL_IN_LINES if lines else _CONTROL).search(value):
        kind = "control characters" if lines else "line breaks, tabs or other control characters"
        raise ValidationFailed(
            f"{what} cannot contain {kind}", code="control_characters", field=field
        )
    return value


def moment(value: datetime | None, *, what: str, field: str | None = None) -> datetime | None:
    """An optional point in time from a user: aware, from 1970 up to (not including) 3000."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValidationFailed(f"{what} needs a time zone, e.g. 2027-01-01T00:00:00Z", field=field)
    if not EARLIEST <= value < LATEST:
        raise ValidationFailed(
            f"{what} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} "
            f"(it is {value:%Y-%m-%d})",
            code="out_of_range",
            field=field,
        )
    return value
