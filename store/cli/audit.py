"""`store audit verify|list`: check the audit log's hash chain, or read it from the shell.

``verify`` exits 0 when the chain is intact and 1 naming the first bad sequence number.
"""

from __future__ import annotations

import argparse

from store.audit import service as audit
from store.cli._common import add_command, command, emit, positive_int, table, unit_of_work


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="verify or list the audit log",
        description="The hash-chained audit log of security-relevant actions.",
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    add_command(sub, "verify", _verify, help="check the hash chain (exit 1 if broken)")
    lst = add_command(sub, "list", _list, help="list events, newest first")
    lst.add_argument("--action", default="", help="an action, or a prefix ending in '.'")
    lst.add_argument("--actor", default="", help="a username, or 'system'")
    lst.add_argument("--org", default="", help="an organization's events")
    lst.add_argument(
        "--limit", type=positive_int, default=50, help="at most this many (default %(default)s)"
    )


@command
def _verify(args: argparse.Namespace) -> int:
    """Walk the chain from the first event: sequence, previous hashes, recomputed hashes."""
    with unit_of_work() as session:
        report = audit.verify_chain(session)
    emit(
        args,
        report.as_dict(),
        text=lambda r: (
            f"ok: {r['count']} events, chain intact"
            if r["ok"]
            else f"BROKEN at seq {r['first_bad_seq']}: {r['reason']} "
            f"({r['count']} events before it verified)"
        ),
    )
    return 0 if report.ok else 1


@command
def _list(args: argparse.Namespace) -> int:
    """The latest events matching the filters."""
    from store.accounts import service as accounts

    with unit_of_work() as session:
        org_id = accounts.get_organization(session, args.org).id if args.org else None
        flt = audit.AuditFilter(action=args.action, actor=args.actor, org_id=org_id)
        page = audit.list_events(session, flt, per_page=args.limit)
        rows = [
            {
                "seq": e.seq,
                "at": e.at,
                "actor": e.actor,
                "action": e.action,
                "target": f"{e.target_type}:{e.target_id}" if e.target_type else "",
                "org_id": e.org_id,
                "details": e.details,
                "hash": e.hash,
            }
            for e in page.items
        ]
    columns = ("seq", "at", "actor", "action", "target")
    emit(args, rows, text=lambda r: table(r, columns, empty="no events"))
    return 0
