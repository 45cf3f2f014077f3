"""`store mail test|send`: send a test message, deliver the outbox."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from store.cli._common import (
    CommandError,
    add_command,
    command,
    emit,
    load_settings,
    open_engine,
    prepare_schema,
)
from store.config import Settings
from store.db import make_sessionmaker, session_scope
from store.mail import outbox, sender
from store.mail.backends import backend_for
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
