"""Prometheus metrics: the series the store exports, and cheap functions that record them.

Other packages call the functions below (one line each), never prometheus_client itself:

- :func:`token_decision` on every ``/token`` answer (a dict lookup and a counter increment:
  the token endpoint is on the path of every pull and push);
- :func:`webhook_event`, :func:`registry_event`, :func:`search_latency`;
- :func:`http_request`, called by the request middleware with the route *template*
  (``/products/{org}/{name}``), never the raw path, so the number of series stays bounded.

The per-request series (requests, durations, token decisions) are counted in a plain
dictionary of the process (:class:`_Pending`: one lock, one dict update per request) and
added to the prometheus values once a second by a background thread, and before every
exposition: a scrape sees them at most a second late, and a request pays no prometheus
call (in multi-process mode each is a locked write into a memory-mapped file).

Label values that come from outside (event types and actions) are capped: after
``MAX_LABEL_SETS`` distinct combinations per metric, new ones are counted as ``other``.

Several worker processes (``store serve --workers N``) each count their own requests.
``prometheus_client``'s multi-process mode adds them up: when ``PROMETHEUS_MULTIPROC_DIR``
is set before this module is imported, every worker writes its values to files in that
directory and :func:`exposition` merges them. ``store serve`` sets it for ``--workers`` > 1
(see docs/operations.md).
"""

from __future__ import annotations

import atexit
import functools
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_LABEL_SETS = 200
OTHER = "other"
CONTENT_TYPE = CONTENT_TYPE_LATEST
F = TypeVar("F", bound=Callable[..., Any])

# Request latencies: the token endpoint answers in a few milliseconds, pages in tens.
HTTP_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEARCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Counter(
    "store_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "store_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
TOKEN_DECISIONS = Counter(
    "store_registry_token_decisions",
    "Registry token requests by outcome (granted, denied, rejected) and reason.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
WEBHOOK_EVENTS = Counter(
    "store_webhook_events",
    "Payment webhook deliveries by event type and outcome.",
    ["type", "outcome"],
    registry=REGISTRY,
)
REGISTRY_EVENTS = Counter(
    "store_registry_events",
    "Registry notification events by action and outcome (processed, duplicate, ignored).",
    ["action", "outcome"],
    registry=REGISTRY,
)
SEARCH_DURATION = Histogram(
    "store_search_duration_seconds",
    "Time to run one search (ranking, facets, page), by backend.",
    ["backend"],
    buckets=SEARCH_BUCKETS,
    registry=REGISTRY,
)

# prometheus_client chose how to store values when it was imported: follow that choice.
_MULTIPROC_DIR = os.environ.get(MULTIPROC_ENV) or None
if _MULTIPROC_DIR is None:
    # Per-process CPU and memory; meaningless summed across workers, so single-process only.
    ProcessCollector(registry=REGISTRY)


class _Children:
    """Labelled children of one metric, cached by label values; at most ``limit`` sets."""

    def __init__(self, metric: Any, limit: int = MAX_LABEL_SETS) -> None:
        self._metric = metric
        self._limit = limit
        self._cache: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def get(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is not None:
            return child
        with self._lock:
            child = self._cache.get(values)
            if child is None:
                if len(self._cache) >= self._limit:
                    values = tuple(OTHER for _ in values)
                    child = self._cache.get(values)
                if child is None:
                    child = self._metric.labels(*values)
                    self._cache[values] = child
            return child


def _label(value: object) -> str:
    """An outside value as a label: a short string; anything else is ``unknown``."""
    if isinstance(value, str) and value:
        return value[:64]
    return "unknown"


_http_requests = _Children(HTTP_REQUESTS, limit=2000)
_http_duration = _Children(HTTP_DURATION, limit=1000)
_token = _Children(TOKEN_DECISIONS)
_webhooks = _Children(WEBHOOK_EVENTS)
_registry_events = _Children(REGISTRY_EVENTS)
_search = _Children(SEARCH_DURATION, limit=10)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# The token endpoint's decisions, bound once: recording one is two dict lookups and an
# increment, with no allocation (see token_decision).
TOKEN_REASONS: dict[str, tuple[str, ...]] = {
    "granted": ("full", "partial", "login"),
    "denied": (
        "bad_credentials",
        "no_license",
        "expired",
        "revoked",
        "suspended",
        "product_suspended",
        "login_required",
        "push_denied",
        "catalog_denied",
        "token_scope",
        "no_access",
    ),
    "rejected": ("invalid_scope", "unknown_service", "too_large", "rate_limited"),
}
_TOKEN_BOUND: dict[str, dict[str, Any]] = {
    outcome: {reason: _token.get(outcome, reason) for reason in reasons}
    for outcome, reasons in TOKEN_REASONS.items()
}


class _Pending:
    """Counts and durations not yet added to the prometheus values (module docstring)."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: dict[Any, int] = {}  # counter child -> increments
        self._durations: dict[tuple[str, str], list[float]] = {}  # [sum, per-bucket counts]
        self._requests: dict[tuple[str, str, int], int] = {}
        self._thread_pid = 0

    def count(self, child: Any) -> None:
        with self._lock:
            self._counts[child] = self._counts.get(child, 0) + 1
        if self._thread_pid != _pid():
            self._start()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        bucket = bisect_left(HTTP_BUCKETS, seconds) + 1  # prometheus: first bound >= value
        with self._lock:
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            timing = self._durations.get((method, route))
            if timing is None:
                timing = self._durations[(method, route)] = [0.0] * (len(HTTP_BUCKETS) + 2)
            timing[0] += seconds
            timing[bucket] += 1
        if self._thread_pid != _pid():
            self._start()

    def flush(self) -> None:
        with self._lock:
            counts, self._counts = self._counts, {}
            requests, self._requests = self._requests, {}
            durations, self._durations = self._durations, {}
        for child, n in counts.items():
            child.inc(n)
        for (method, route, status), n in requests.items():
            _http_requests.get(method, route, str(status)).inc(n)
        for (method, route), timing in durations.items():
            histogram = _http_duration.get(method, route)
            histogram._sum.inc(timing[0])
            for index, observed in enumerate(timing[1:]):
                if observed:
                    histogram._buckets[index].inc(observed)

    def _start(self) -> None:
        """The flushing thread of this process (a forked worker starts its own)."""
        with self._lock:
            if self._thread_pid == _pid():
                return
            self._thread_pid = _pid()
        thread = threading.Thread(target=self._run, name="store-metrics", daemon=True)
        thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()


_pid = os.getpid
_pending = _Pending()
atexit.register(_pending.flush)


def flush() -> None:
    """Add what this process counted to the prometheus values now."""
    _pending.flush()


def token_decision(outcome: str, reason: str) -> None:
    """Count one ``/token`` answer: ``granted`` (full, partial, login), ``denied`` (the
    refusal reason, or bad_credentials) or ``rejected`` (a malformed request)."""
    try:
        child = _TOKEN_BOUND[outcome][reason]
    except KeyError:
        child = _token.get(_label(outcome), _label(reason))
    _pending.count(child)


def token_granted(*, partial: bool, login: bool) -> None:
    """Count one token issued: ``login`` when no scope was asked (docker login), ``partial``
    when some scopes were refused, else ``full``."""
    _pending.count(_TOKEN_BOUND["granted"]["login" if login else "partial" if partial else "full"])


def webhook_event(event_type: object, outcome: str) -> None:
    """Count one payment webhook delivery (outcome: processed, duplicate, ignored,
    retry_later, or why it was rejected: bad_signature, stale_signature, malformed_event)."""
    _webhooks.get(_label(event_type), _label(outcome)).inc()


def registry_event(action: object, outcome: str) -> None:
    """Count one registry notification event (outcome: processed, duplicate, ignored)."""
    _registry_events.get(_label(action), _label(outcome)).inc()


def search_latency(seconds: float, backend: str) -> None:
    """Record how long one search took on ``backend`` (sqlite or postgresql)."""
    _search.get(_label(backend)).observe(seconds)


def timed_search(func: F) -> F:
    """Decorate ``search(session, ...)``: record its latency, labelled by the database
    dialect (the search backend follows it). Failed searches (bad queries) are not timed."""

    @functools.wraps(func)
    def wrapper(session: Any, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter()
        result = func(session, *args, **kwargs)
        search_latency(perf_counter() - started, session.get_bind().dialect.name)
        return result

    return wrapper  # type: ignore[return-value]


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one HTTP request by route template (the middleware calls this)."""
    if method not in _METHODS:
        method = OTHER
    _pending.request(method, route, status, seconds)


def multiprocess_dir() -> str | None:
    """The multi-process directory in the environment (set for workers not yet started)."""
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> bytes:
    """The text exposition of every series: this process's, or every worker's merged
    (another worker's last second may not be in yet)."""
    _pending.flush()
    directory = _MULTIPROC_DIR
    if directory is None:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)
    return generate_latest(merged)


def prepare_multiprocess_dir(directory: str) -> None:
    """Empty a multi-process directory before the workers start (stale files of an earlier
    run would be added to the new counts)."""
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))
