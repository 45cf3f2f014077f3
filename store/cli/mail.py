"""`store mail test|send|outbox|retry|reminders|digests`: send a test message, deliver the
outbox, queue the reminders and the daily sales digests that are due."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from store.billing import notices, sale_notices
from store.cli._common import (
    CommandError,
    add_command,
    command,
    emit,
    load_settings,
    open_engine,
    positive_int,
    prepare_schema,
    table,
    unit_of_work,
    uuid_arg,
)
from store.config import Settings
from store.db import make_sessionmaker, session_scope
from store.mail import outbox, sender, service
from store.mail.backends import backend_for
from store.mail.models import OutboxMessage
from store.validation import email as valid_email


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mail",
        help="send a test message, deliver the outbox",
        description=(
            "Outgoing mail. Messages wait in the outbox until a sender delivers them: every "
            "`store serve` worker runs one (unless STORE_MAIL_SENDER=false), and `store mail "
            "send` runs one on its own. Without STORE_MAIL_SMTP_HOST messages are written as "
            ".eml files under the data directory's mail/ folder."
        ),
    )
    sub = parser.add_subparsers(dest="mail_command", metavar="ACTION", required=True)
    test = add_command(sub, "test", _test, help="send one test message now")
    test.add_argument("--to", required=True, metavar="ADDRESS", help="recipient address")
    send = add_command(sub, "send", _send, help="deliver the messages that are due")
    send.add_argument(
        "--loop",
        action="store_true",
        help="keep delivering, polling every STORE_MAIL_POLL_INTERVAL seconds, until stopped",
    )

    lst = add_command(sub, "outbox", _outbox, help="list the outbox, newest first")
    lst.add_argument("--failed", action="store_true", help="only the failed messages")
    lst.add_argument(
        "--limit", type=positive_int, default=50, help="at most this many (default %(default)s)"
    )
    retry = add_command(sub, "retry", _retry, help="send a failed message again")
    retry.add_argument(
        "id", type=uuid_arg, metavar="ID", help="the message's id (store mail outbox)"
    )
    add_command(
        sub,
        "reminders",
        _reminders,
        help="queue the trial-ending and grace-ending reminders that are due (idempotent)",
    )
    add_command(
        sub,
        "digests",
        _digests,
        help="queue yesterday's sales digests (idempotent: one a person a day)",
    )


def message_out(message: OutboxMessage) -> dict[str, object]:
    return {
        "id": message.id,
        "message_id": message.message_id,
        "template": message.template,
        "category": message.category,
        "to": message.to_addr,
        "subject": message.subject,
        "status": message.status,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at,
        "last_error": message.last_error,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
    }


@command
def _outbox(args: argparse.Namespace) -> int:
    """The newest messages of the outbox (or only the failed ones) with their status,
    attempts and last error; the counts by status go to standard error."""
    with unit_of_work() as session:
        page = service.list_outbox(session, failed_only=args.failed, limit=args.limit)
        rows = [message_out(m) for m in page.items]
    columns = ("id", "created_at", "to", "subject", "status", "attempts", "last_error")
    emit(args, rows, text=lambda r: table(r, columns, empty="no messages"))
    if not args.json:
        summary = ", ".join(f"{k} {v}" for k, v in sorted(page.counts.items())) or "empty"
        print(f"outbox: {summary}", file=sys.stderr)
    return 0


@command
def _retry(args: argparse.Namespace) -> int:
    """Queue a failed message again with a fresh count of attempts; a sender delivers it
    (exit 1 for a message that is not failed: it is on its way, or it went out)."""
    with unit_of_work() as session:
        message = service.retry(session, message_id=args.id)
        data = message_out(message)
    emit(args, data, text=f"queued {data['id']} to {data['to']} again")
    return 0


@command
def _reminders(args: argparse.Namespace) -> int:
    """Queue the reminders due now: a trial whose first charge is within three days, a grace
    period that ends within three days. Each is queued once, however often this runs (every
    `store billing sweep` runs it too)."""
    settings = load_settings()
    with unit_of_work(settings) as session:
        counts = notices.send_reminders(session, settings)
    emit(
        args,
        counts,
        text=lambda c: f"queued {c['trial_ending']} trial and {c['grace_ending']} grace reminders",
    )
    return 0


@command
def _digests(args: argparse.Namespace) -> int:
    """Queue the daily sales digests: to each owner or finance member who chose them, the
    sales of an organization paid before today (UTC) not told yet. One digest a person,
    organization and day however often this runs, also in several processes at once; no
    sales, no mail. Run it with `store mail reminders`, e.g. hourly."""
    settings = load_settings()
    with _sessions(settings) as factory:
        with session_scope(factory) as session:
            recipients = sale_notices.digest_recipients(session)
        digests = sales = 0
        for account_id, organization_id in recipients:
            with session_scope(factory) as session:
                told = sale_notices.send_digest(
                    session, settings, account_id=account_id, organization_id=organization_id
                )
            digests += told > 0
            sales += told
    counts = {"digests": digests, "sales": sales, "choosing_digests": len(recipients)}
    emit(args, counts, text=lambda c: f"queued {c['digests']} digests of {c['sales']} sales")
    return 0


@contextmanager
def _sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    with open_engine(settings) as engine:
        prepare_schema(engine, settings)
        yield make_sessionmaker(engine)


@command
def _test(args: argparse.Namespace) -> int:
    """Write a test message to the outbox and deliver it at once with the configured
    backend (SMTP, or a .eml file). Exit 1 when it could not be delivered; the outbox then
    tries again later like any message."""
    settings = load_settings()
    address = valid_email(args.to)
    with _sessions(settings) as factory:
        with session_scope(factory) as session:
            message_id = outbox.enqueue(
                session, settings=settings, template="test", to=address, context={}
            )
        assert message_id is not None
        policy = sender.Policy.of(settings)
        claimed = sender.claim(factory, policy, message=message_id)
        if claimed is None:  # another sender took it first: it delivers it
            emit(args, {"id": message_id, "status": "sending"}, text=f"queued {message_id}")
            return 0
        error = sender.deliver(backend_for(settings), claimed)
        status = sender.record(factory, policy, claimed, error)
    data = {"id": message_id, "to": address, "status": status, "error": str(error or "")}
    if error is not None:
        raise CommandError(f"the test message to {address} was not delivered: {error}")
    where = (
        f"{settings.mail_smtp_host}:{settings.resolved_smtp_port}"
        if settings.mail_smtp_host
        else str(settings.mail_dir / f"{message_id}.eml")
    )
    emit(args, data, text=f"sent {message_id} to {address} ({where})")
    return 0


@command
def _send(args: argparse.Namespace) -> int:
    """Deliver every message that is due, then exit (or, with --loop, keep going until
    SIGTERM or SIGINT). Any number of senders may run at once: each message is claimed by
    one of them."""
    settings = load_settings()
    with _sessions(settings) as factory:
        worker = sender.Sender(factory, settings)
        if not args.loop:
            counts = worker.run_once()
            emit(
                args,
                counts,
                text=f"sent {counts['sent']}, to retry {counts['retry']}, "
                f"failed {counts['failed']}",
            )
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker.run_forever(stop)
    return 0
