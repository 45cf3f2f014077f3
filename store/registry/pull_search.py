"""Pull counts reach the search documents in batches, within about a second.

A pull notification commits the counts themselves (:func:`store.registry.hub.count_pull`);
rewriting the repository's search documents (and its listing's) costs more than that, and
a busy repository is pulled many times a second. So each process keeps the set of
repositories pulled since its last refresh and rewrites their documents once per
``interval`` on a thread of its own, in one transaction: a pull is visible in search within
``interval`` plus that refresh, however many pulls there were.

The counts are never at stake (they are committed with the event); a process that dies
with refreshes pending leaves those documents one refresh behind, until the repository's
next pull or ``store search reindex``. A refresh that fails is tried again at the next one.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session, sessionmaker

from store.db import session_scope
from store.registry import hub

log = logging.getLogger("store.registry.pull_search")
INTERVAL_S = 1.0


class PullSearch:
    def __init__(
        self, factory: Callable[[], sessionmaker[Session]], *, interval: float = INTERVAL_S
    ) -> None:
        self._factory = factory  # returns the sessionmaker in force (tests swap it)
        self._interval = interval
        self._pending: set[uuid.UUID] = set()
        self._wake = threading.Condition()
        self._flushing = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def mark(self, repository_ids: Iterable[uuid.UUID]) -> None:
        """These repositories' pull counts changed (committed): refresh them soon."""
        ids = set(repository_ids)
        if not ids:
            return
        with self._wake:
            first = not self._pending
            self._pending |= ids
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="store-pull-search", daemon=True
                )
                self._thread.start()
            # Only the first mark of an interval wakes the thread (it then waits out the
            # interval whatever arrives): not a thread switch for every pull notification.
            if first:
                self._wake.notify()

    def pending(self) -> int:
        with self._wake:
            return len(self._pending)

    def flush(self) -> int:
        """Rewrite the documents of every repository marked so far; how many there were."""
        with self._flushing:
            with self._wake:
                ids, self._pending = self._pending, set()
            if not ids:
                return 0
            try:
                with session_scope(self._factory()) as session:
                    hub.refresh_search(session, ids)
            except Exception:
                log.warning(
                    "search refresh of %d pulled repositories failed", len(ids), exc_info=True
                )
                with self._wake:
                    self._pending |= ids  # tried again at the next refresh
                raise
            return len(ids)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                # Gather what else arrives for one interval, then refresh it all at once.
                deadline = time.monotonic() + self._interval
                while not self._stopping and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                if self._stopping:
                    return
            try:
                self.flush()
            except Exception:
                with self._wake:  # the database is away: do not spin
                    self._wake.wait(self._interval)

    def stop(self) -> None:
        """Stop the thread and refresh what is still pending (process shutdown)."""
        with self._wake:
            self._stopping = True
            thread = self._thread
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout=10)
        try:
            self.flush()
        except Exception:
            log.warning("pull counts of %d repositories not in search", self.pending())
