"""`store builds worker|trigger|list|show|cancel`: run and operate automated builds."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from sqlalchemy import select

from store.accounts.models import Account
from store.builds import service
from store.builds.models import Build
from store.builds.worker import Worker
from store.cli._common import (
    CommandError,
    add_command,
    command,
    emit,
    load_settings,
    open_engine,
    positive_int,
    prepare_schema,
    repository,
    table,
    unit_of_work,
    uuid_arg,
)
from store.db import make_sessionmaker


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "builds",
        help="run build workers, start, list and cancel automated builds",
        description=(
            "Automated builds of hub repositories from their Git sources (docs/builds.md). "
            "Builds wait in the database until a worker claims one; run any number of "
            "`store builds worker` processes (each runs one build at a time)."
        ),
    )
    sub = parser.add_subparsers(dest="builds_command", metavar="ACTION", required=True)
    worker = add_command(sub, "worker", _worker, help="claim and run queued builds")
    worker.add_argument(
        "--once", action="store_true", help="run the queued builds, then exit (default: poll)"
    )
    worker.add_argument("--name", help="this worker's name in the builds it runs")
    trigger = add_command(sub, "trigger", _trigger, help="queue a build of a branch or tag")
    trigger.add_argument(
        "repository", type=repository, metavar="NAMESPACE/NAME", help="the repository to build"
    )
    trigger.add_argument("--ref", default="main", help="branch, tag:NAME or a full ref")
    trigger.add_argument("--commit", help="the full commit SHA (default: the ref's latest)")
    trigger.add_argument(
        "--user", required=True, help="the account starting it (it must be allowed to push)"
    )
    lst = add_command(sub, "list", _list, help="the latest builds of a repository")
    lst.add_argument("repository", type=repository, metavar="NAMESPACE/NAME", help="the repository")
    lst.add_argument(
        "--limit", type=positive_int, default=20, help="at most this many (default %(default)s)"
    )
    show = add_command(sub, "show", _show, help="one build, with its log")
    show.add_argument("id", type=uuid_arg, metavar="ID", help="the build's id (store builds list)")
    cancel = add_command(sub, "cancel", _cancel, help="cancel a queued or running build")
    cancel.add_argument("id", type=uuid_arg, metavar="ID", help="the build's id")
    cancel.add_argument("--user", required=True, help="the account canceling it")


def _account(session: object, username: str) -> Account:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    account = session.scalar(select(Account).where(Account.username == username.lower()))
    if account is None or not account.is_active:
        raise CommandError(f"no active account '{username}'")
    return account


@command
def _worker(args: argparse.Namespace) -> int:
    """Claim queued builds one at a time and run them (git, buildah, push), until stopped
    by SIGTERM or SIGINT (the build running then is finished first), or with --once until
    none is queued. Any number of workers may run at once: each build is claimed by one."""
    settings = load_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with open_engine(settings) as engine:
        prepare_schema(engine, settings)
        try:
            worker = Worker(make_sessionmaker(engine), settings, name=args.name)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from None
        if args.once:
            counts = worker.run_once()
            emit(args, counts, text=", ".join(f"{k} {v}" for k, v in counts.items()))
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        worker.run_forever(stop)
    return 0


@command
def _trigger(args: argparse.Namespace) -> int:
    """Queue a build of the ref (its latest commit, or --commit); a worker runs it."""
    with unit_of_work() as session:
        build = service.trigger_manual(
            session,
            actor=_account(session, args.user),
            name=args.repository,
            ref=args.ref,
            commit_sha=args.commit,
        )
        data = service.build_out(build)
    emit(args, data, text=f"queued build {data['id']} of {data['repository']} ({data['ref']})")
    return 0


@command
def _list(args: argparse.Namespace) -> int:
    """The latest builds of a repository, newest first."""
    with unit_of_work() as session:
        rows = [
            service.build_out(b)
            for b in service.list_builds(session, name=args.repository, limit=args.limit)
        ]
    columns = ("id", "status", "docker_tag", "ref", "commit_sha", "trigger", "queued_at")
    emit(args, rows, text=lambda r: table(r, columns, empty="no builds"))
    return 0


@command
def _show(args: argparse.Namespace) -> int:
    """One build's details and its whole log."""
    with unit_of_work() as session:
        build = session.get(Build, args.id)
        if build is None:
            raise CommandError(f"no build {args.id}")
        data = service.build_out(build)
        data["log"] = service.read_log(session, build.id, limit=1_000_000).text
    if args.json:
        emit(args, data, text="")
        return 0
    for key in ("id", "repository", "status", "ref", "commit_sha", "docker_tag", "digest", "error"):
        print(f"{key}: {data[key] if data[key] is not None else ''}")
    sys.stdout.write(data["log"])
    return 0


@command
def _cancel(args: argparse.Namespace) -> int:
    """Cancel a queued build at once, or a running one when its worker next looks."""
    with unit_of_work() as session:
        build = service.cancel(session, actor=_account(session, args.user), build_id=args.id)
        data = service.build_out(build)
    note = " (cancel requested)" if data["status"] == "running" else ""
    emit(args, data, text=f"build {data['id']}: {data['status']}{note}")
    return 0
