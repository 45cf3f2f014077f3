"""Worker processes for a full reindex: the pure-Python steps that need nothing but their
input (the documents' text, PostgreSQL's tsvector literals) spread over the other cores."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from store.search.query import TextJob, index_texts

J = TypeVar("J")
R = TypeVar("R")
_PIECES = 16  # a batch of jobs is shared out in this many pieces


class Spread(Generic[R]):
    """Jobs handed to the workers in pieces, the results in the jobs' order. Whoever asks
    for the result takes back from the end the pieces no worker has started and does them
    itself, so neither side waits long for the other when one gets less of the CPU (a
    loaded machine); until then the workers work while the caller does something else."""

    def __init__(
        self, pool: WorkerPool, fn: Callable[[Sequence[Any]], list[R]], jobs: Sequence[Any]
    ) -> None:
        size = max(1, -(-len(jobs) // _PIECES))
        self._fn = fn
        self._pieces = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        self._futures: list[Future[list[R]]] = [
            pool.executor.submit(fn, piece) for piece in self._pieces
        ]

    def result(self) -> list[R]:
        done: dict[int, list[R]] = {}
        for i in reversed(range(len(self._pieces))):
            if not self._futures[i].cancel():
                break  # a worker has it, so every piece before it is a worker's too
            done[i] = self._fn(self._pieces[i])
        out: list[R] = []
        for i, future in enumerate(self._futures):
            out += done[i] if i in done else future.result()
        return out


class WorkerPool:
    """Spawned worker processes (never forked from a process with open connections and
    threads), each with its own caches; as with any spawned process, a script that
    reindexes keeps its top level under ``if __name__ == "__main__":`` (the workers import
    the main module). ``fn`` given to :meth:`start` must be a module-level function."""

    def __init__(self, workers: int) -> None:
        # Imported here: serving workers import this module's users and never reindex.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self.executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )

    def start(self, fn: Callable[[Sequence[J]], list[R]], jobs: Sequence[J]) -> Spread[R]:
        """``fn`` over the jobs, begun in the workers now; ``.result()`` collects it."""
        return Spread(self, fn, jobs)

    def texts(self, jobs: Sequence[TextJob]) -> list[str]:
        """store.search.query.index_texts of these jobs (tokenising, folding, stemming)."""
        return self.start(index_texts, jobs).result()

    def close(self) -> None:
        self.executor.shutdown(cancel_futures=True)
