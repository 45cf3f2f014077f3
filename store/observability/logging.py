"""Structured logs: one JSON object per line, each carrying the request id.

The request id lives in a context variable set by the request middleware
(:mod:`store.observability.middleware`); :func:`stamp_records` copies it onto every record
made while a request is being handled (in the event loop or in the thread pool, which copies
the context).

``store serve`` configures logging for itself and its workers with :func:`log_config`:
JSON when ``STORE_LOG_FORMAT=json`` (the default in production), plain text otherwise.
Lines go to standard output through :class:`BatchedStreamHandler`: records below WARNING
are written out in batches (at most ``FLUSH_S`` later), a WARNING or worse at once with
everything before it, so an access log line costs no system call of its own.

The access log (one line per request) is made without a ``LogRecord`` when logging is
configured as ``store serve`` configures it (:func:`direct_handler`): the line, the same
characters the record would have been formatted into, goes straight into the handler's
batch. With any other configuration (another handler, a filter, a record factory of
someone else's: tests, an operator's own config) it is an ordinary record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("store_request_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
# What an incoming X-Request-ID may look like (UUIDs, hex, base64 ids, trace ids); anything
# else, including a longer one, is replaced by an id of our own.
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=/@-]{0,127}", re.ASCII)

# Attributes every LogRecord has; the others were passed with extra= and become fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "color_message", "request_id", "taskName"}
)


def valid_request_id(value: str | None) -> str | None:
    """The incoming id when it is safe to reuse (log it, echo it), else None."""
    if value and _VALID_ID.fullmatch(value):
        return value
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()  # a third of uuid4().hex's cost


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def _with_request_id(factory: Any) -> Any:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return record

    make_record.store_request_id = True  # type: ignore[attr-defined]
    make_record.store_wraps = factory  # type: ignore[attr-defined]
    return make_record


def stamp_records() -> None:
    """Give every log record made during a request its request id, when it is made (so a
    handler that formats later, in another thread or a queue, still has it). Idempotent."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "store_request_id", False):
        logging.setLogRecordFactory(_with_request_id(factory))


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "request_id"?, ...extra fields, "exc"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            data["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(data, default=str).decode()

    def access_line(
        self, created: float, level: int, name: str, message: str, request_id: str | None,
        fields: dict[str, Any],
    ) -> str:  # fmt: skip
        """What :meth:`format` makes of a record of these (``fields``: its ``extra``)."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": logging.getLevelName(level).lower(),
            "logger": name,
            "message": message,
        }
        if request_id:
            data["request_id"] = request_id
        data.update(fields)
        return orjson.dumps(data, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO store.access [req-id] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

        self._second: tuple[int, str] | None = None

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As logging's, with the date and time of a second made once for all its lines."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time(record.created, record.msecs)

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        cached = self._second
        if cached is None or cached[0] != second:
            stamp = time.strftime(self.default_time_format, self.converter(created))
            cached = self._second = (second, stamp)
        msec_format = self.default_msec_format
        return msec_format % (cached[1], msecs) if msec_format else cached[1]

    def format(self, record: logging.LogRecord) -> str:
        if not getattr(record, "request_id", None):
            record.request_id = REQUEST_ID.get() or "-"
        return super().format(record)

    def access_line(
        self, created: float, level: int, name: str, message: str, request_id: str | None,
        fields: dict[str, Any],
    ) -> str:  # fmt: skip
        """What :meth:`format` makes of a record of these (``fields``, its ``extra``, are
        not shown in text)."""
        msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord computes it
        when = self._time(created, msecs)
        level_name = logging.getLevelName(level)
        return f"{when} {level_name} {name} [{request_id or '-'}] {message}"


FLUSH_S = 0.5  # the longest a line below WARNING waits in the buffer
FLUSH_BYTES = 64 * 1024


BATCHED_LOGGERS = frozenset({"store.access"})  # one line per request: worth batching


class BatchedStreamHandler(logging.StreamHandler):
    """A stream handler that writes the access log's lines below WARNING in batches: when
    ``FLUSH_BYTES`` have gathered, when any other line comes (with it, in order), and at
    the latest ``FLUSH_S`` after the first waiting line (a background thread per
    process), and at exit (``logging.shutdown`` flushes every handler). Every other line
    is written at once: uvicorn re-raises SIGTERM after its graceful shutdown, which ends
    the process without ``atexit``, so a line about stopping must not wait in a buffer."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        self._thread_pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            line = self.format(record) + self.terminator
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        self._append(
            line, now=record.levelno >= logging.WARNING or record.name not in BATCHED_LOGGERS
        )

    def add_line(self, line: str) -> None:
        """A line of a batched logger below WARNING, already formatted: into the batch (as
        :meth:`emit` would put the record's line)."""
        self.acquire()
        try:
            self._append(line + self.terminator, now=False)
        finally:
            self.release()

    def _append(self, line: str, *, now: bool) -> None:
        # With the handler's lock held: into the batch, written at once when ``now`` or full.
        self._lines.append(line)
        self._size += len(line)
        if now or self._size >= FLUSH_BYTES:
            self._write()
        elif self._thread_pid != os.getpid():
            self._start()

    def _write(self) -> None:
        lines, self._lines, self._size = self._lines, [], 0
        if not lines:
            return
        # A stream that is gone (a closed pipe) leaves nobody to tell.
        with contextlib.suppress(Exception):
            self.stream.write("".join(lines))
            self.stream.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            self._write()
        finally:
            self.release()

    def _start(self) -> None:
        self._thread_pid = os.getpid()
        thread = threading.Thread(target=self._run, name="store-log-flush", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            if self._lines:
                self.flush()


DirectFormatter = JsonFormatter | TextFormatter


def direct_handler(
    logger: logging.Logger, level: int
) -> tuple[BatchedStreamHandler, DirectFormatter] | None:
    """The handler and formatter a line of ``logger`` (one of ``BATCHED_LOGGERS``) at
    ``level`` (below WARNING, enabled) reaches, when its line can be made without a record:
    exactly one handler on the way, a :class:`BatchedStreamHandler` with the store's own
    formatter (as ``store serve`` configures logging), no filter that could drop or change
    the record, and no record factory but logging's own (with the request id,
    :func:`stamp_records`). Otherwise None: log a record."""
    factory: Any = logging.getLogRecordFactory()
    if getattr(factory, "store_wraps", factory) is not logging.LogRecord:
        return None
    if logger.filters or logger.disabled:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if type(found) is not BatchedStreamHandler or found.filters or level < found.level:
        return None
    formatter = found.formatter
    if type(formatter) is JsonFormatter or (
        type(formatter) is TextFormatter and formatter.datefmt is None
    ):
        return found, formatter
    return None


def flush_log_handlers() -> None:
    """Write what the root logger's handlers hold (the batched access lines)."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()


def resolve_format(log_format: str, environment: str) -> str:
    """``auto`` is JSON in production and text elsewhere."""
    if log_format == "auto":
        return "json" if environment == "production" else "text"
    return log_format


def log_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the store and uvicorn (given to uvicorn, which
    applies it in every worker). uvicorn's own access log is replaced by ``store.access``."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"store": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "store": {
                "class": f"{__name__}.BatchedStreamHandler",
                "formatter": "store",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["store"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # Alembic narrates every migration step at INFO.
            "alembic": {"level": "WARNING"},
        },
    }
