"""The `store` command: one module per command group, each with a `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from store import __version__

# Each module defines register(subparsers) and sets `func` on its parsers; func(args) returns
# the process exit code.
COMMAND_MODULES = (
    "store.cli.serve",  # store serve
    "store.cli.db",  # store db upgrade|current|check
    "store.cli.admin",  # store admin|users|orgs ...
    "store.cli.catalog",  # store products|tiers ...
    "store.cli.access",  # store entitlements|tokens ...
    "store.cli.demo",  # store demo seed
    "store.cli.registry",  # store registry config|sync, store keys rotate|list
    "store.cli.billing",  # store billing sync|sweep|orders|refund
    "store.cli.search",  # store search reindex|query
    "store.cli.license",  # store license verify|show, store keys (license purpose)
    "store.cli.signing",  # store sign, store signing keygen|fingerprint|keys
    "store.cli.audit",  # store audit verify|list
    "store.cli.mail",  # store mail test|send|outbox|retry
    "store.cli.builds",  # store builds worker|trigger|list|show|cancel
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="store", description="Run and operate the Store software marketplace."
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__}",
        help="print the version and exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # command group not installed in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from store import followers

    followers.install()  # catalog edits kept in step by the registry and billing
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
