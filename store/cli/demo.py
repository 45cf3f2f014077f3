"""`store demo seed`: load a realistic demo catalog and demo accounts."""

from __future__ import annotations

import argparse
import secrets
from typing import Any
from urllib.parse import urlsplit

from store import demo
from store.cli._common import (
    CommandError,
    add_command,
    command,
    emit,
    load_settings,
    table,
    unit_of_work,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `store demo seed`."""
    parser = subparsers.add_parser(
        "demo", help="demo data", description="Load demo data into the store."
    )
    sub = parser.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    p = add_command(sub, "seed", _seed, help="load the demo catalog and accounts (idempotent)")
    p.add_argument(
        "--password",
        help="password for every demo account (default: a new random one, printed); "
        "set again on every run",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="seed even though STORE_ENVIRONMENT is production",
    )


@command
def _seed(args: argparse.Namespace) -> int:
    """Load five publishers, 26 products (one left in draft) with free, one-time, monthly
    and yearly tiers, and demo accounts: an administrator, one owner per publisher and a
    customer. Running it again creates only what is missing. The demo accounts' password is
    set on every run and printed, so keep the output private."""
    settings = load_settings()
    if settings.environment == "production" and not args.force:
        raise CommandError(
            "This store runs in production; demo accounts with a printed password do not "
            "belong there. Add --force if you really mean it"
        )
    password = args.password or secrets.token_urlsafe(12)
    registry_host = urlsplit(settings.registry_url).netloc or "localhost:5000"
    with unit_of_work(settings) as session:
        result = demo.seed(
            session, password=password, registry_host=registry_host, settings=settings
        )
    data = result.as_dict()
    data["public_url"] = settings.public_url
    emit(args, data, text=_text)
    return 0


def _text(d: dict[str, Any]) -> str:
    created = len(d["created_products"])
    lines = [
        f"Demo catalog: {len(d['organizations'])} publishers, {len(d['products'])} products "
        f"({created} created now, {len(d['products']) - created} already there).",
        "",
        f"Log in at {d['public_url']} with:",
        "",
        table(d["accounts"], ["username", "password", "role"], empty=""),
    ]
    return "\n".join(lines)
