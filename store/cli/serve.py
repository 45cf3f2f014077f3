"""`store serve`: run the store under uvicorn."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

from store import migrate
from store.billing.config import stripe_environment
from store.cli._common import (
    CommandError,
    command,
    describe_database,
    load_settings,
    open_engine,
    positive_int,
)
from store.config import Settings
from store.observability import check_settings, serving
from store.observability.logging import JsonFormatter, resolve_format

if TYPE_CHECKING:
    import uvicorn

APP_FACTORY = "store.app:create_serving_app"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `store serve`."""
    parser = subparsers.add_parser(
        "serve",
        help="run the store (web pages, JSON API, registry token endpoint)",
        description=(
            "Run the store under uvicorn. Settings come from STORE_* environment variables "
            "(and .env), read by every worker. On SQLite, the embedded default, migrations "
            "are applied at start; on PostgreSQL the store refuses to start until "
            "`store db upgrade` has brought the schema up to date."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port", type=positive_int, default=8000, help="port to bind (default %(default)s)"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--workers", type=positive_int, default=1, help="worker processes (default %(default)s)"
    )
    mode.add_argument(
        "--reload", action="store_true", help="restart on code changes (development only)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn log level (default %(default)s)",
    )
    parser.set_defaults(func=serve)


@command
def serve(args: argparse.Namespace) -> int:
    """Check the database, make the shared secret, bind the address, say where we listen,
    hand over to uvicorn."""
    import uvicorn

    settings = load_settings()
    check_settings(settings, stripe_environment)  # exit 1 listing every problem
    with open_engine(settings) as engine:
        if settings.is_sqlite:
            # Migrate once here, before workers start, so they never race to do it.
            migrate.upgrade(engine)
        elif not migrate.is_current(engine):
            current = ", ".join(sorted(migrate.current_revisions(engine))) or "none"
            raise CommandError(
                f"The database schema is out of date (at revision {current}); "
                f"run `store db upgrade` before `store serve` ({describe_database(settings)})"
            )
    # Generate the secret (kept in the data directory) before any worker starts, so every
    # worker reads the same one instead of racing to create its own.
    settings.resolved_secret_key  # noqa: B018

    listen_url = f"http://{_host_for_url(args.host)}:{args.port}"
    if "public_url" not in settings.model_fields_set:
        # Without STORE_PUBLIC_URL the store is reached where it listens; the workers read
        # the same variable, so links and the token realm agree with this address.
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host  # noqa: S104
        os.environ["STORE_PUBLIC_URL"] = f"http://{_host_for_url(host)}:{args.port}"
        settings = load_settings()
    config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=None if args.reload else args.workers,
        reload=args.reload,
        log_level=args.log_level,
        **serving.uvicorn_options(settings, workers=args.workers, log_level=args.log_level),
    )
    serving.guard_headers(config, settings)
    sock = listen(args.host, args.port, backlog=config.backlog)
    _announce(settings, listen_url)  # only now: the address is ours, connections queue
    run_server(config, sock)
    return 0


def listen(host: str, port: int, *, backlog: int) -> socket.socket:
    """Bind and listen on the address as uvicorn would; a clear error when it is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"{_host_for_url(host)}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"cannot listen on {where}: the port is in use") from None
        raise CommandError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)  # worker processes serve the same socket
    return sock


def run_server(config: uvicorn.Config, sock: socket.socket) -> None:
    """Serve on the bound socket: one process, several workers, or reloading on changes
    (what ``uvicorn.run`` does after binding)."""
    import uvicorn
    from uvicorn.supervisors import ChangeReload, Multiprocess

    server = uvicorn.Server(config)
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=[sock]).run()
        elif config.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def _announce(settings: Settings, listen_url: str) -> None:
    """Where the store listens: lines for a person, or one JSON log record when the logs
    are JSON (a log collector then reads every line of the output the same way)."""
    details = {
        "public_url": str(settings.public_url),
        "data_dir": str(settings.data_dir.resolve()),
        "database": describe_database(settings),
    }
    if resolve_format(settings.log_format, settings.environment) == "json":
        record = logging.LogRecord(
            "store.serve", logging.INFO, __file__, 0, f"Store listening on {listen_url}", None, None
        )
        record.__dict__.update(details)
        print(JsonFormatter().format(record))
    else:
        print(f"Store listening on {listen_url}")
        print(f"  public URL:     {details['public_url']}")
        print(f"  data directory: {details['data_dir']}")
        print(f"  database:       {details['database']}")
    sys.stdout.flush()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
