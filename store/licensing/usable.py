"""When an entitlement gives access: the one definition, in Python and in SQL.

An entitlement is *usable* at ``now`` when its status is ``active``, it has started
(``starts_at <= now``), and it has not ended, or its grace period (payment past due) still
runs: ``ends_at`` is NULL or after ``now``, or ``grace_until`` is after ``now``.

Its *effective status* names every state a holder can be in: ``pending`` (not started yet),
``active``, ``grace`` (past its end, or past due, inside the grace period), ``expired``
(past its end and grace), and the stored ``suspended``, ``revoked`` and ``expired``.
Usable = ``active`` or ``grace``.

:func:`effective_status` is the Python form (``Entitlement.is_usable``, explanations);
:data:`USABLE_SQL` the SQL form over a table aliased ``e`` (the token endpoint's statement,
search visibility) and :func:`usable_clause` the SQLAlchemy form (ORM queries). A test
evaluates all three over every state on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

USABLE_STATES = ("active", "grace")

# The SQL form, for a table aliased ``e`` and a ``:now`` parameter.
USABLE_SQL = (
    "e.status = 'active' AND e.starts_at <= :now"
    " AND (e.ends_at IS NULL OR e.ends_at > :now OR e.grace_until > :now)"
)


def effective_status(
    status: str,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
) -> str:
    """The status as of ``now``: an active entitlement not started is pending, one past its
    end is in grace while the grace period runs and expired after."""
    if status != "active":
        return status
    if starts_at > now:
        return "pending"
    if grace_until is not None and grace_until > now:
        return "grace" if ends_at is not None and ends_at <= now else "active"
    if ends_at is not None and ends_at <= now:
        return "expired"
    return "active"


def is_usable(
    status: str,
    starts_at: datetime,
    ends_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
) -> bool:
    return effective_status(status, starts_at, ends_at, grace_until, now) in USABLE_STATES


def usable_until(ends_at: datetime | None, grace_until: datetime | None) -> datetime | None:
    """The instant a usable entitlement stops being usable by time alone (the end of its
    grace period, if later than its end); None for one without an end."""
    if ends_at is None:
        return None
    return grace_until if grace_until is not None and grace_until > ends_at else ends_at


def usable_clause(table: Any, now: Any) -> ColumnElement[bool]:
    """The SQLAlchemy form over a table, alias or mapped class with the entitlement columns."""
    c = getattr(table, "c", table)
    return and_(
        c.status == "active",
        c.starts_at <= now,
        or_(c.ends_at.is_(None), c.ends_at > now, c.grace_until > now),
    )
