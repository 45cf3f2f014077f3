"""Helpers shared by every `store` command group.

A command module registers its parsers and wraps each handler with :func:`command`::

    def register(subparsers):
        p = subparsers.add_parser("widgets", help="...")
        add_json_option(p)
        add_actor_option(p)
        p.set_defaults(func=_list)

    @command
    def _list(args):
        with unit_of_work() as session:
            admin = resolve_actor(session, args.actor)
            emit(args, [...], text=lambda data: ...)
        return 0

Conventions, which every group follows:

* Exit codes: 0 success; 1 for user errors (a :class:`~store.errors.StoreError` such as not
  found, conflict or validation, a :class:`CommandError`, or an unusable database); 2 for
  usage errors, raised by argparse (use ``type=`` converters from this module so that bad
  values are usage errors too).
* Errors go to stderr as ``error: <message>``; results go to stdout.
* ``--json`` prints one stable JSON document (keys sorted, UUIDs and datetimes as strings):
  an object for one thing, an array for a listing.
* One unit of work per command (:func:`unit_of_work`): everything or nothing is written.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from store import migrate
from store.accounts import service as accounts
from store.accounts.models import AccessToken, Account, Organization
from store.catalog import money
from store.catalog.models import Product, Tier
from store.config import Settings
from store.db import make_engine, make_sessionmaker, session_scope
from store.errors import StoreError, ValidationFailed
from store.licensing.models import Entitlement

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A user error found by the command itself (not a service): message on stderr, exit 1."""


# --- settings, database and the unit of work ------------------------------------------


def load_settings() -> Settings:
    """The settings of this process: STORE_* environment variables and ``.env``."""
    return Settings()


def describe_database(settings: Settings) -> str:
    """The database URL with any password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


@contextmanager
def open_engine(settings: Settings) -> Iterator[Engine]:
    """An engine for the configured database, disposed on exit.

    The data directory is created first, since the embedded SQLite file lives in it.
    """
    settings.ensure_data_dir()
    engine = make_engine(settings.resolved_database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def prepare_schema(engine: Engine, settings: Settings) -> None:
    """Apply migrations on SQLite (the embedded default, as ``store serve`` does); on any
    other database refuse an out-of-date schema, which the operator upgrades explicitly."""
    if settings.is_sqlite:
        migrate.upgrade(engine)
    elif not migrate.is_current(engine):
        raise CommandError(
            "The database schema is out of date; run `store db upgrade` first "
            f"(database: {describe_database(settings)})"
        )


@contextmanager
def unit_of_work(settings: Settings | None = None) -> Iterator[Session]:
    """One session for the whole command, committed at the end or rolled back on any error.

    Opens its own engine from the settings (read from the environment when not given) and
    prepares the schema with :func:`prepare_schema`.
    """
    settings = settings or load_settings()
    with open_engine(settings) as engine:
        prepare_schema(engine, settings)
        with session_scope(make_sessionmaker(engine)) as session:
            yield session


def command(func: Handler) -> Handler:
    """Turn the errors a user can cause into ``error: ...`` on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except StoreError as exc:
            return fail(exc.detail)
        except CommandError as exc:
            return fail(str(exc))
        except ValidationError as exc:  # from Settings: a bad STORE_* variable
            problems = "; ".join(
                f"STORE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
                for e in exc.errors()
            )
            return fail(f"invalid settings: {problems}")
        except (OperationalError, ProgrammingError) as exc:
            # Unreachable server, wrong credentials, missing tables: say what, not a trace.
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            return fail(f"the database could not be used: {reason}")

    return wrapper


def usage_error(args: argparse.Namespace, message: str) -> None:
    """Report a usage error found after parsing (exit 2), with the command's usage line.

    Works for parsers made with :func:`add_command`, which keep themselves in ``args``.
    """
    parser: argparse.ArgumentParser | None = getattr(args, "_parser", None)
    if parser is not None:
        parser.error(message)  # exits 2
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Handler,
    *,
    help: str,
    json: bool = True,
    actor: bool = False,
) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``func``; its docstring becomes the description that
    ``--help`` prints, so it is written in plain text (tests/cli/test_cli_help.py checks).

    ``json`` adds ``--json``, ``actor`` adds ``--as USER`` (see :func:`resolve_actor`).
    """
    parser = group.add_parser(name, help=help, description=func.__doc__ or help)
    if json:
        add_json_option(parser)
    if actor:
        add_actor_option(parser)
    parser.set_defaults(func=func, _parser=parser)
    return parser


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; returns exit code 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


# --- output ---------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(data: Any) -> str:
    """Stable JSON: sorted keys, two-space indent, UUIDs and ISO 8601 datetimes as strings."""
    return json.dumps(data, default=_json_default, indent=2, sort_keys=True, ensure_ascii=False)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (stored as ``args.json``)."""
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON on standard output"
    )


def emit(args: argparse.Namespace, data: Any, *, text: str | Callable[[Any], str]) -> None:
    """Print ``data`` as JSON with ``--json``, otherwise the human-readable ``text``."""
    if getattr(args, "json", False):
        print(to_json(data))
        return
    rendered = text(data) if callable(text) else text
    if rendered:
        print(rendered)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, empty: str) -> str:
    """A plain left-aligned text table of ``columns`` taken from each row."""
    if not rows:
        return empty
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def details(data: dict[str, Any], keys: Sequence[str] | None = None) -> str:
    """``key: value`` lines for one object."""
    keys = keys or sorted(data)
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {_cell(data.get(k))}" for k in keys)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


# --- acting as an administrator -------------------------------------------------------


def add_actor_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--as USER`` (stored as ``args.actor``): the administrator the command acts as."""
    parser.add_argument(
        "--as",
        dest="actor",
        metavar="USER",
        help="administrator to act as (default: the oldest active administrator)",
    )


def resolve_actor(session: Session, username: str | None) -> Account:
    """The administrator an operator command acts as.

    Services check permissions against an actor account; operator commands act as an active
    administrator: the one named by ``--as``, or else the oldest one. With no administrator
    yet, the error says to run ``store admin create``.
    """
    if username:
        account = accounts.get_account_by_username(session, username)
        if not account.is_admin or not account.is_active:
            raise CommandError(f"'{account.username}' is not an active administrator")
        return account
    oldest = session.scalar(
        select(Account)
        .where(Account.is_admin.is_(True), Account.is_active.is_(True))
        .order_by(Account.created_at, Account.username)
        .limit(1)
    )
    if oldest is None:
        raise CommandError(
            "There is no administrator yet; create one with "
            "`store admin create --username NAME --email ADDRESS`"
        )
    return oldest


# --- argument converters (argparse ``type=``; bad values are usage errors, exit 2) ------


def on_off(value: str) -> bool:
    """``on``/``off`` (also yes/no, true/false, 1/0) as a bool."""
    lowered = value.strip().lower()
    if lowered in ("on", "yes", "true", "1"):
        return True
    if lowered in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not '{value}'")


def repository(value: str) -> str:
    """``ORG/NAME``, lowercased."""
    org, sep, name = value.strip().lower().partition("/")
    if not sep or not org or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected ORG/NAME, not '{value}'")
    return f"{org}/{name}"


def uuid_arg(value: str) -> uuid.UUID:
    """A UUID such as the ids printed by list commands."""
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not an id (a UUID)") from None


def utc_date(value: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 date-time, as an aware UTC datetime."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date such as 2027-01-01, not '{value}'"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def csv_list(value: str) -> list[str]:
    """``a,b,c`` as a list, blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]


def decimal_amount(value: str) -> Decimal:
    """A non-negative decimal price such as ``49.00`` (``store.catalog.money.parse_decimal``)."""
    try:
        amount = money.parse_decimal(value, what="The price")
    except ValidationFailed as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None
    if amount is None:
        raise argparse.ArgumentTypeError("expected a price such as 49.00")
    return amount


def positive_int(value: str) -> int:
    """A whole number of 1 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not '{value}'") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, not '{value}'")
    return number


def non_negative_int(value: str) -> int:
    """A whole number of 0 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not '{value}'") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not '{value}'")
    return number


# --- money ----------------------------------------------------------------------------


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in ``currency`` (see store.catalog.money)."""
    return money.currency_exponent(currency)


def to_minor(amount: Decimal, currency: str) -> int:
    """``49.00 usd`` → 4900; a fraction finer than the currency's minor unit is an error."""
    try:
        return money.to_minor(amount, currency)
    except StoreError as exc:
        raise CommandError(f"{amount}: {exc.detail}") from None


def format_price(amount_minor: int, currency: str) -> str:
    """4900, usd → ``49.00``."""
    return money.format_amount(amount_minor, currency)


# --- passwords ------------------------------------------------------------------------


def add_password_options(parser: argparse.ArgumentParser) -> None:
    """``--password`` or ``--password-stdin``; without either the password is prompted for."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password", help="the password (visible in the process list; prefer the others)"
    )
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )


def read_password(args: argparse.Namespace) -> str:
    """The password from ``--password``, ``--password-stdin`` or a prompt (asked twice)."""
    if args.password is not None:
        return str(args.password)
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CommandError("No password on standard input")
        return line
    if not sys.stdin.isatty():
        raise CommandError("No terminal to ask for a password; use --password-stdin")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise CommandError("The passwords do not match")
    return first


# --- JSON shapes of domain objects (stable: fields are only ever added) ----------------


def account_out(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "username": account.username,
        "email": account.email,
        "display_name": account.display_name,
        "is_admin": account.is_admin,
        "is_active": account.is_active,
        "created_at": account.created_at,
    }


def org_out(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "description": org.description,
        "website": org.website,
        "verified": org.verified,
        "verified_at": org.verified_at,
        "verification_note": org.verification_note,
        "created_at": org.created_at,
    }


def tier_out(tier: Tier) -> dict[str, Any]:
    return {
        "id": tier.id,
        "product": tier.product.repository,
        "slug": tier.slug,
        "name": tier.name,
        "description": tier.description,
        "billing": tier.billing,
        "amount_minor": tier.amount_minor,
        "price": format_price(tier.amount_minor, tier.currency),
        "currency": tier.currency,
        "trial_days": tier.trial_days,
        "seats": tier.seats,
        "features": list(tier.features),
        "public": tier.public,
        "active": tier.active,
    }


def product_out(product: Product, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": product.id,
        "repository": product.repository,
        "org": product.organization.slug,
        "slug": product.slug,
        "kind": product.kind,
        "title": product.title,
        "summary": product.summary,
        "status": product.status,
        "official": product.official,
        "certified": product.certified,
        "categories": [c.slug for c in product.categories],
        "platforms": list(product.platforms),
        "published_at": product.published_at,
    }
    if full:
        data.update(
            description_md=product.description_md,
            status_reason=product.status_reason,
            logo_url=product.logo_url,
            docs_url=product.docs_url,
            support_url=product.support_url,
            eula_url=product.eula_url,
            created_at=product.created_at,
            tiers=[tier_out(t) for t in product.tiers],
        )
    return data


def entitlement_out(entitlement: Entitlement) -> dict[str, Any]:
    holder = (
        {"type": "account", "name": entitlement.account.username}
        if entitlement.account is not None
        else {
            "type": "org",
            "name": entitlement.organization.slug if entitlement.organization else None,
        }
    )
    return {
        "id": entitlement.id,
        "holder": holder,
        "product": entitlement.product.repository,
        "tier": entitlement.tier.slug,
        "source": entitlement.source,
        "status": entitlement.status,
        "effective_status": entitlement.effective_status(datetime.now(UTC)),
        "starts_at": entitlement.starts_at,
        "ends_at": entitlement.ends_at,
        "seats": entitlement.seats,
        "features": list(entitlement.features),
        "reason": entitlement.reason,
        "revoked_at": entitlement.revoked_at,
        "created_at": entitlement.created_at,
    }


def token_out(token: AccessToken) -> dict[str, Any]:
    owner = (
        {"type": "org", "name": token.organization.slug}
        if token.organization is not None
        else {"type": "account", "name": token.account.username if token.account else None}
    )
    return {
        "id": token.id,
        "kind": token.kind,
        "owner": owner,
        "name": token.name,
        "prefix": token.prefix,
        "scopes": list(token.scopes),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "revoked_at": token.revoked_at,
        "client": token.client,
        "source": token.source_kind,
    }
