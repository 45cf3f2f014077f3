"""Operator commands for access: `store entitlements|tokens|sessions ...` (see
store.cli.admin)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from store.accounts import service as accounts
from store.accounts import sessions as web_sessions
from store.accounts.models import WebSession
from store.audit import service as audit
from store.catalog import service as catalog
from store.cli._common import (
    add_command,
    command,
    details,
    emit,
    entitlement_out,
    load_settings,
    positive_int,
    repository,
    resolve_actor,
    table,
    token_out,
    unit_of_work,
    utc_date,
    uuid_arg,
)
from store.db import utcnow
from store.licensing import entitlements as licensing
from store.licensing.models import Entitlement

if TYPE_CHECKING:
    from typing import TypeAlias

    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


from store.cli.admin import group


def register(subparsers: SubParsers) -> None:
    """Add the command groups to the `store` parser."""
    _register_entitlements(subparsers)
    _register_tokens(subparsers)
    _register_sessions(subparsers)


# --- entitlements ---------------------------------------------------------------------


def _holder_options(
    p: argparse.ArgumentParser,
    *,
    required: bool,
    user_help: str = "the account (its username)",
    org_help: str = "the organization (its slug)",
) -> None:
    holder = p.add_mutually_exclusive_group(required=required)
    holder.add_argument("--user", metavar="USER", help=user_help)
    holder.add_argument("--org", metavar="ORG", help=org_help)


def _register_entitlements(subparsers: SubParsers) -> None:
    sub = group(subparsers, "entitlements", "list, grant and revoke entitlements")
    p = add_command(sub, "list", _entitlements_list, help="list entitlements")
    holder = p.add_mutually_exclusive_group()
    holder.add_argument("--user", metavar="USER", help="held by the user or their organizations")
    holder.add_argument("--org", metavar="ORG", help="held by the organization")
    holder.add_argument(
        "--product", metavar="ORG/NAME", type=repository, help="on the product (its repository)"
    )
    p = add_command(sub, "show", _entitlements_show, help="show an entitlement")
    p.add_argument("id", metavar="ID", type=uuid_arg, help="the entitlement's id (see list)")
    p = add_command(
        sub, "grant", _entitlements_grant, help="grant a tier without payment", actor=True
    )
    p.add_argument(
        "product", metavar="ORG/NAME", type=repository, help="the product's repository, ORG/NAME"
    )
    p.add_argument("tier", metavar="TIER", help="the tier's id within the product (its slug)")
    _holder_options(
        p,
        required=True,
        user_help="grant it to this account (username)",
        org_help="grant it to this organization (slug), for its members",
    )
    p.add_argument("--until", type=utc_date, metavar="YYYY-MM-DD", help="end (default: perpetual)")
    p.add_argument("--reason", default="", help="why (kept with the entitlement)")
    p = add_command(sub, "revoke", _entitlements_revoke, help="revoke an entitlement", actor=True)
    p.add_argument("id", metavar="ID", type=uuid_arg, help="the entitlement's id (see list)")
    p.add_argument("--reason", required=True, help="why (kept with the entitlement)")


def _entitlements_text(d: list[dict[str, Any]]) -> str:
    rows = [{**e, "holder": f"{e['holder']['type']}:{e['holder']['name']}"} for e in d]
    cols = ["id", "holder", "product", "tier", "source", "effective_status", "ends_at"]
    return table(rows, cols, empty="No entitlements.")


def _entitlement_text(d: dict[str, Any]) -> str:
    return _entitlements_text([d])


@command
def _entitlements_list(args: argparse.Namespace) -> int:
    """List entitlements, newest first: all, or those of --user, --org or --product."""
    with unit_of_work() as session:
        if args.user:
            items = licensing.entitlements_of(
                session, accounts.get_account_by_username(session, args.user)
            )
        elif args.product:
            product = catalog.get_product_by_repository(session, args.product)
            items = licensing.entitlements_of_product(session, product)
        else:
            stmt = select(Entitlement).order_by(Entitlement.created_at.desc())
            if args.org:
                org = accounts.get_organization(session, args.org)
                stmt = stmt.where(Entitlement.organization_id == org.id)
            items = list(session.scalars(stmt))
        data = [entitlement_out(e) for e in items]
    emit(args, data, text=_entitlements_text)
    return 0


@command
def _entitlements_show(args: argparse.Namespace) -> int:
    """Show one entitlement."""
    with unit_of_work() as session:
        data = entitlement_out(licensing.get_entitlement(session, args.id))
    emit(
        args,
        data,
        text=lambda d: details({**d, "holder": f"{d['holder']['type']}:{d['holder']['name']}"}),
    )
    return 0


@command
def _entitlements_grant(args: argparse.Namespace) -> int:
    """Give --user or --org a tier without payment, perpetual or --until a date."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        product = catalog.get_product_by_repository(session, args.product)
        tier = catalog.get_tier_by_slug(session, product, args.tier)
        account = accounts.get_account_by_username(session, args.user) if args.user else None
        org = accounts.get_organization(session, args.org) if args.org else None
        entitlement = licensing.grant(
            session,
            actor=actor,
            tier=tier,
            account=account,
            org=org,
            ends_at=args.until,
            reason=args.reason,
        )
        data = entitlement_out(entitlement)
    emit(
        args,
        data,
        text=lambda d: (
            f"Granted {d['product']} {d['tier']} to {d['holder']['name']} (id {d['id']})"
        ),
    )
    return 0


@command
def _entitlements_revoke(args: argparse.Namespace) -> int:
    """Revoke an entitlement for good; its licenses are revoked with it."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        entitlement = licensing.get_entitlement(session, args.id)
        licensing.revoke(session, entitlement=entitlement, actor=actor, reason=args.reason)
        data = entitlement_out(entitlement)
    emit(args, data, text=lambda d: f"Revoked entitlement {d['id']}")
    return 0


# --- tokens ---------------------------------------------------------------------------


def _register_tokens(subparsers: SubParsers) -> None:
    sub = group(subparsers, "tokens", "list, create and revoke access tokens")
    p = add_command(sub, "list", _tokens_list, help="list a user's or an organization's tokens")
    _holder_options(
        p,
        required=True,
        user_help="the account's personal tokens and registry log-ins (refresh; username)",
        org_help="the organization's robot tokens and license log-ins (refresh; slug)",
    )
    p.add_argument(
        "--include-revoked",
        action="store_true",
        help="list revoked, expired and rotated tokens too",
    )
    p = add_command(
        sub, "create", _tokens_create, help="create a token (secret shown once)", actor=True
    )
    _holder_options(
        p,
        required=True,
        user_help="a personal token of this account (username)",
        org_help="a robot token of this organization (slug)",
    )
    p.add_argument(
        "--name", required=True, help="what the token is for, e.g. ci (up to 100 characters)"
    )
    p.add_argument(
        "--scope",
        action="append",
        dest="scopes",
        required=True,
        choices=sorted({s for scopes in accounts.TOKEN_SCOPES.values() for s in scopes}),
        help="repeatable; robot (organization) tokens take pull and push only",
    )
    p.add_argument(
        "--expires-days",
        type=positive_int,
        metavar="N",
        help="expire after N days (default: never)",
    )
    p = add_command(sub, "revoke", _tokens_revoke, help="revoke a token", actor=True)
    p.add_argument("id", metavar="ID", type=uuid_arg, help="the token's id (see list)")


def _tokens_text(d: list[dict[str, Any]]) -> str:
    return table(
        d,
        [
            "id",
            "kind",
            "name",
            "prefix",
            "scopes",
            "source",
            "client",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ],
        empty="No tokens.",
    )


@command
def _tokens_list(args: argparse.Namespace) -> int:
    """List the personal tokens and registry log-ins (kind refresh) of --user, or the robot
    tokens of --org."""
    with unit_of_work() as session:
        account = accounts.get_account_by_username(session, args.user) if args.user else None
        org = accounts.get_organization(session, args.org) if args.org else None
        tokens = accounts.list_tokens(
            session, account=account, org=org, include_revoked=args.include_revoked
        )
        data = [token_out(t) for t in tokens]
    emit(args, data, text=_tokens_text)
    return 0


@command
def _tokens_create(args: argparse.Namespace) -> int:
    """Create a personal token for --user or a robot token for --org. The secret is
    printed once (and included in --json); only its hash is kept."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        expires_at = utcnow() + timedelta(days=args.expires_days) if args.expires_days else None
        if args.user:
            issued = accounts.create_token(
                session,
                kind="personal",
                name=args.name,
                scopes=args.scopes,
                created_by=actor,
                account=accounts.get_account_by_username(session, args.user),
                expires_at=expires_at,
            )
        else:
            issued = accounts.create_token(
                session,
                kind="robot",
                name=args.name,
                scopes=args.scopes,
                created_by=actor,
                org=accounts.get_organization(session, args.org),
                expires_at=expires_at,
            )
        data = {**token_out(issued.token), "secret": issued.secret}
    emit(
        args,
        data,
        text=lambda d: (
            f"Created token {d['name']} (id {d['id']}); copy it now, "
            f"it is not shown again:\n{d['secret']}"
        ),
    )
    return 0


@command
def _tokens_revoke(args: argparse.Namespace) -> int:
    """Revoke a token: it stops working at once."""
    with unit_of_work() as session:
        actor = resolve_actor(session, args.actor)
        token = accounts.revoke_token(
            session, token=accounts.get_token(session, args.id), actor=actor
        )
        data = token_out(token)
    emit(args, data, text=lambda d: f"Revoked token {d['name']} ({d['prefix']}…)")
    return 0


# --- sessions -------------------------------------------------------------------------


def _register_sessions(subparsers: SubParsers) -> None:
    sub = group(subparsers, "sessions", "list and end an account's browser sessions")
    p = add_command(sub, "list", _sessions_list, help="list where an account is logged in")
    p.add_argument("--user", required=True, metavar="USER", help="the account (its username)")
    p.add_argument(
        "--include-ended",
        action="store_true",
        help="list ended, expired and idle sessions too (kept about a day)",
    )
    p = add_command(
        sub, "end", _sessions_end, help="end one session, or all of an account's", actor=True
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "id", nargs="?", metavar="ID", type=uuid_arg, help="the session's id (see list)"
    )
    which.add_argument(
        "--user", metavar="USER", help="end every session of this account (username)"
    )


def _session_out(record: WebSession, lifetimes: web_sessions.Lifetimes) -> dict[str, Any]:
    return {
        "id": record.id,
        "user": record.account.username,
        "user_agent": record.user_agent,
        "address": record.address,
        "created_at": record.created_at,
        "last_seen_at": record.last_seen_at,
        "ends_at": web_sessions.idle_until(record, lifetimes),
        "ended_at": record.ended_at,
        "end_reason": record.end_reason,
    }


def _sessions_text(d: list[dict[str, Any]]) -> str:
    return table(
        d,
        ["id", "user_agent", "address", "created_at", "last_seen_at", "ends_at", "ended_at"],
        empty="No sessions.",
    )


@command
def _sessions_list(args: argparse.Namespace) -> int:
    """List the browser sessions of --user, most recently used first: device, address,
    when it logged in, its last use and when it ends unless used again."""
    settings = load_settings()
    lifetimes = web_sessions.Lifetimes.of(settings)
    with unit_of_work(settings) as session:
        account = accounts.get_account_by_username(session, args.user)
        rows = web_sessions.active_sessions(
            session, account, lifetimes=lifetimes, include_ended=args.include_ended
        )
        data = [_session_out(r, lifetimes) for r in rows]
    emit(args, data, text=_sessions_text)
    return 0


@command
def _sessions_end(args: argparse.Namespace) -> int:
    """End one browser session by its id, or every session of --user: those browsers are
    logged out at their next request. Recorded in the audit log as session.end."""
    settings = load_settings()
    lifetimes = web_sessions.Lifetimes.of(settings)
    with unit_of_work(settings) as session:
        actor = resolve_actor(session, args.actor)
        if args.user:
            account = accounts.get_account_by_username(session, args.user)
            count = web_sessions.end_all_sessions(session, account, reason="admin")
            if count:
                audit.record(
                    session,
                    action="session.end",
                    actor=actor,
                    target=account,
                    details={"sessions": count},
                )
            data: dict[str, Any] = {"user": account.username, "ended": count}
        else:
            record = web_sessions.get_session_record(session, args.id)
            data = _session_out(web_sessions.end_by(session, record=record, actor=actor), lifetimes)
    if args.user:
        emit(args, data, text=lambda d: f"Ended {d['ended']} session(s) of {d['user']}")
    else:
        emit(args, data, text=lambda d: f"Ended session {d['id']} of {d['user']}")
    return 0
