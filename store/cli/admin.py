"""Operator commands: `store admin|users|orgs ...` (catalog and access commands live in
`store.cli.catalog` and `store.cli.access`).

Everything an administrator can do on the site, scriptable. Each command runs in one unit
of work, prints a stable JSON document with ``--json``, reports errors on stderr and exits
1 for not found, conflict or validation errors and 2 for usage errors.

Commands that need a permission check act as an administrator: ``--as USER``, by default
the oldest active administrator (``store admin create`` makes the first one).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from store.accounts import service as accounts
from store.catalog import service as catalog
from store.cli._common import (
    CommandError,
    account_out,
    add_command,
    add_password_options,
    command,
    details,
    emit,
    load_settings,
    on_off,
    org_out,
    read_password,
    resolve_actor,
    table,
    unit_of_work,
)
from store.licensing import entitlements as licensing

if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy.orm import Session

    from store.accounts.models import Account

    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


# Helps of arguments that several commands take.
USERNAME_HELP = "login name: 3-39 lowercase letters, digits and '.', '_' or '-' between them"
USER_HELP = "the account's username"
ORG_HELP = "the organization's slug (its registry namespace)"


def register(subparsers: SubParsers) -> None:
    """Add the account and organization command groups to the `store` parser."""
    _register_admin(subparsers)
    _register_users(subparsers)
    _register_orgs(subparsers)


def group(subparsers: SubParsers, name: str, help: str) -> SubParsers:
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


# --- admin ----------------------------------------------------------------------------


def _register_admin(subparsers: SubParsers) -> None:
    sub = group(subparsers, "admin", "bootstrap administrator accounts")
    p = add_command(sub, "create", _admin_create, help="create (or promote) an administrator")
    p.add_argument("--username", required=True, help=USERNAME_HELP)
    p.add_argument(
        "--email",
        required=True,
        help="e-mail address (with --promote, it must match the existing account's)",
    )
    add_password_options(p)
    p.add_argument(
        "--promote",
        action="store_true",
        help="if the account exists, make it an administrator instead of failing",
    )


def _optional_actor(session: Session) -> Account | None:
    try:
        return resolve_actor(session, None)
    except CommandError:
        return None


@command
def _admin_create(args: argparse.Namespace) -> int:
    """Create an administrator account. With --promote, an existing account with this
    username (and e-mail address) is made an administrator instead; its password is kept."""
    password = None if args.promote else read_password(args)
    with unit_of_work() as session:
        existing = accounts.find_account(session, args.username)
        if existing is not None and args.promote:
            if existing.email != args.email.strip().lower():
                raise CommandError(
                    f"'{existing.username}' has another e-mail address; check --email"
                )
            # Promoting needs no other administrator (it may make the first one).
            actor = _optional_actor(session)
            account = accounts.set_admin(session, account=existing, is_admin=True, actor=actor)
            created = False
        else:
            if existing is not None:
                raise CommandError(
                    f"An account named '{existing.username}' exists; "
                    "add --promote to make it an administrator"
                )
            account = accounts.create_account(
                session,
                username=args.username,
                email=args.email,
                password=password if password is not None else read_password(args),
                is_admin=True,
                email_verified=True,
            )
            created = True
        data = {**account_out(account), "created": created}
    verb = "Created" if created else "Promoted"
    emit(args, data, text=f"{verb} administrator {data['username']} <{data['email']}>")
    return 0


# --- users ----------------------------------------------------------------------------


def _register_users(subparsers: SubParsers) -> None:
    sub = group(subparsers, "users", "list and manage accounts")
    p = add_command(sub, "list", _users_list, help="list accounts")
    p.add_argument("--query", default="", help="part of a username or e-mail address")
    p = add_command(sub, "show", _users_show, help="show an account")
    p.add_argument("user", metavar="USER", help=USER_HELP)
    p = add_command(sub, "create", _users_create, help="create an account")
    p.add_argument("--username", required=True, help=USERNAME_HELP)
    p.add_argument("--email", required=True, help="e-mail address (one account per address)")
    p.add_argument(
        "--display-name",
        default="",
        help="name shown on the site, up to 120 characters (default: the username)",
    )
    p.add_argument("--admin", action="store_true", help="make it an administrator")
    add_password_options(p)
    p = add_command(
        sub, "set-admin", _users_set_admin, help="grant or remove administrator", actor=True
    )
    p.add_argument("user", metavar="USER", help=USER_HELP)
    p.add_argument(
        "value",
        metavar="on|off",
        type=on_off,
        help="on makes it an administrator, off removes that (also yes|no, true|false, 1|0)",
    )
    p = add_command(
        sub, "disable", _users_disable, help="disable an account (no login, no tokens)", actor=True
    )
    p.add_argument("user", metavar="USER", help=USER_HELP)
    p = add_command(sub, "enable", _users_enable, help="enable a disabled account", actor=True)
    p.add_argument("user", metavar="USER", help=USER_HELP)
    p = add_command(sub, "set-password", _users_set_password, help="set an account's password")
    p.add_argument("user", metavar="USER", help=USER_HELP)
    add_password_options(p)


def _account_text(d: dict[str, Any]) -> str:
    return details(d, ["username", "email", "display_name", "is_admin", "is_active", "id"])


@command
def _users_list(args: argparse.Namespace) -> int:
    """List accounts, optionally those whose username or e-mail contains --query."""
    with unit_of_work() as session:
        data = [account_out(a) for a in accounts.list_accounts(session, query=args.query)]
    cols = ["username", "email", "is_admin", "is_active", "created_at"]
    emit(args, data, text=lambda d: table(d, cols, empty="No accounts."))
    return 0


@command
def _users_show(args: argparse.Namespace) -> int:
    """Show an account, its organizations and how many tokens and entitlements it has."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user)
        data = account_out(account)
        data["organizations"] = [
            {"slug": org.slug, "role": role}
            for org, role in accounts.organizations_of(session, account)
        ]
        data["tokens"] = len(accounts.list_tokens(session, account=account))
        data["entitlements"] = len(licensing.entitlements_of(session, account))

    def text(d: dict[str, Any]) -> str:
        orgs = [f"{o['slug']} ({o['role']})" for o in d["organizations"]]
        return (
            _account_text(d)
            + "\n"
            + details(
                {"organizations": orgs, "tokens": d["tokens"], "entitlements": d["entitlements"]}
            )
        )

    emit(args, data, text=text)
    return 0


@command
def _users_create(args: argparse.Namespace) -> int:
    """Create an account (an administrator with --admin)."""
    password = read_password(args)
    with unit_of_work() as session:
        account = accounts.create_account(
            session,
            username=args.username,
            email=args.email,
            password=password,
            display_name=args.display_name,
            is_admin=args.admin,
            email_verified=True,
        )
        data = account_out(account)
    emit(args, data, text=lambda d: f"Created account {d['username']} <{d['email']}>")
    return 0


@command
def _users_set_admin(args: argparse.Namespace) -> int:
    """Make an account an administrator (on) or not (off). The last active administrator
    cannot be demoted."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user)
        data = account_out(
            accounts.set_admin(
                session,
                account=account,
                is_admin=args.value,
                actor=resolve_actor(session, args.actor),
            )
        )
    state = "is now" if data["is_admin"] else "is no longer"
    emit(args, data, text=f"{data['username']} {state} an administrator")
    return 0


@command
def _users_disable(args: argparse.Namespace) -> int:
    """Disable an account: it can no longer log in and its tokens stop working."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user)
        data = account_out(
            accounts.set_active(
                session, account=account, active=False, actor=resolve_actor(session, args.actor)
            )
        )
    emit(args, data, text=f"Disabled {data['username']}")
    return 0


@command
def _users_enable(args: argparse.Namespace) -> int:
    """Enable a disabled account."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user)
        data = account_out(
            accounts.set_active(
                session, account=account, active=True, actor=resolve_actor(session, args.actor)
            )
        )
    emit(args, data, text=f"Enabled {data['username']}")
    return 0


@command
def _users_set_password(args: argparse.Namespace) -> int:
    """Set an account's password (prompted for unless given)."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user)
        accounts.set_password(session, account=account, password=read_password(args))
        data = account_out(account)
    emit(args, data, text=f"Set the password of {data['username']}")
    return 0


# --- organizations --------------------------------------------------------------------


def _register_orgs(subparsers: SubParsers) -> None:
    sub = group(subparsers, "orgs", "list and manage organizations (publishers)")
    p = add_command(sub, "list", _orgs_list, help="list organizations")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--verified",
        dest="verified",
        action="store_true",
        default=None,
        help="only verified publishers",
    )
    which.add_argument(
        "--unverified", dest="verified", action="store_false", help="only unverified ones"
    )
    p = add_command(sub, "show", _orgs_show, help="show an organization")
    p.add_argument("org", metavar="ORG", help=ORG_HELP)
    p = add_command(sub, "create", _orgs_create, help="create an organization")
    p.add_argument("--owner", required=True, metavar="USER", help="username of its first owner")
    p.add_argument(
        "--slug",
        required=True,
        help="its namespace in the registry: 2-64 lowercase letters, digits, '.', '_' or '-'",
    )
    p.add_argument("--name", required=True, help="display name, up to 120 characters")
    p.add_argument("--description", default="", help="about the publisher, up to 5000 characters")
    p.add_argument("--website", default="", help="the publisher's site, an http(s):// address")
    p = add_command(sub, "verify", _orgs_verify, help="mark a verified publisher", actor=True)
    p.add_argument("org", metavar="ORG", help=ORG_HELP)
    p.add_argument("--note", default="", help="why (kept with the organization)")
    p = add_command(sub, "unverify", _orgs_unverify, help="remove the verification", actor=True)
    p.add_argument("org", metavar="ORG", help=ORG_HELP)
    p.add_argument("--note", default="", help="why (kept with the organization)")
    p = add_command(sub, "add-member", _orgs_add_member, help="add a member", actor=True)
    p.add_argument("org", metavar="ORG", help=ORG_HELP)
    p.add_argument("user", metavar="USER", help="username of the account to add")
    p.add_argument(
        "--role",
        required=True,
        choices=accounts.ROLES,
        help="viewer pulls; editor also pushes and edits products; owner also manages members",
    )


def _org_text(d: dict[str, Any]) -> str:
    return details(d, ["slug", "name", "verified", "website", "id"])


@command
def _orgs_list(args: argparse.Namespace) -> int:
    """List organizations; --verified or --unverified to filter."""
    with unit_of_work() as session:
        data = [org_out(o) for o in accounts.list_organizations(session, verified=args.verified)]
    emit(
        args, data, text=lambda d: table(d, ["slug", "name", "verified"], empty="No organizations.")
    )
    return 0


@command
def _orgs_show(args: argparse.Namespace) -> int:
    """Show an organization with its members and products."""
    with unit_of_work() as session:
        org = accounts.get_organization(session, args.org)
        data = org_out(org)
        data["members"] = [
            {"username": m.account.username, "role": m.role} for m in accounts.members(session, org)
        ]
        data["products"] = [p.repository for p in catalog.products_of_org(session, org)]

    def text(d: dict[str, Any]) -> str:
        members = [f"{m['username']} ({m['role']})" for m in d["members"]]
        extra = details({"members": members, "products": d["products"]})
        return _org_text(d) + "\n" + extra

    emit(args, data, text=text)
    return 0


@command
def _orgs_create(args: argparse.Namespace) -> int:
    """Create an organization owned by --owner."""
    with unit_of_work() as session:
        owner = accounts.get_account_by_username(session, args.owner)
        org = accounts.create_organization(
            session,
            owner=owner,
            slug=args.slug,
            name=args.name,
            description=args.description,
            website=args.website,
        )
        data = org_out(org)
    emit(args, data, text=lambda d: f"Created organization {d['slug']} ({d['name']})")
    return 0


def _set_verified(args: argparse.Namespace, verified: bool) -> int:
    settings = load_settings()
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        accounts.set_verified(
            session, org=org, actor=actor, verified=verified, note=args.note, settings=settings
        )
        data = org_out(org)
    state = "verified" if verified else "no longer verified"
    emit(args, data, text=f"{data['slug']} is {state}")
    return 0


@command
def _orgs_verify(args: argparse.Namespace) -> int:
    """Mark an organization as a verified publisher."""
    return _set_verified(args, True)


@command
def _orgs_unverify(args: argparse.Namespace) -> int:
    """Remove an organization's verified-publisher badge."""
    return _set_verified(args, False)


@command
def _orgs_add_member(args: argparse.Namespace) -> int:
    """Add USER to ORG with --role, or change the role of a member."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        org = accounts.get_organization(session, args.org)
        user = accounts.get_account_by_username(session, args.user)
        if accounts.role_of(session, user, org) is not None:
            accounts.change_role(
                session, org=org, actor=actor, username=user.username, role=args.role
            )
        else:
            accounts.add_member(session, org=org, actor=actor, account=user, role=args.role)
        data = {
            "org": org.slug,
            "username": user.username,
            "role": accounts.role_of(session, user, org),
        }
    emit(args, data, text=lambda d: f"{d['username']} is {d['role']} of {d['org']}")
    return 0
