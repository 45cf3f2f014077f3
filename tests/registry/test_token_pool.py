"""The token path's PostgreSQL connection pool (store.registry.lookup._LoopPool): at most
``size`` connections, served first come, first served, with no connection or slot lost when
a waiter is cancelled or a connection breaks. Fake connections: the pool's bookkeeping is
what is tested, not psycopg."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from store.registry import lookup


class FakeConnection:
    ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.closed = False


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> lookup._LoopPool:
    import psycopg

    async def connect(*_args: Any, **_kwargs: Any) -> FakeConnection:
        await asyncio.sleep(0)
        return FakeConnection()

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    monkeypatch.setattr(lookup, "_finish", lambda conn: setattr(conn, "closed", True))
    return lookup._LoopPool("postgresql://unused", size=2)


def test_waiters_are_served_in_order_and_newcomers_queue_behind_them(
    pool: lookup._LoopPool,
) -> None:
    async def scenario() -> list[str]:
        served: list[str] = []
        first, second = await pool.get(), await pool.get()  # the pool is full

        async def client(name: str) -> None:
            conn = await pool.get()
            served.append(name)
            await asyncio.sleep(0)
            pool.put(conn)

        waiting = [asyncio.create_task(client(f"w{i}")) for i in range(5)]
        await asyncio.sleep(0)  # all five queued
        pool.put(first)
        # A newcomer arriving as the connection is given back queues behind the five.
        late = asyncio.create_task(client("late"))
        pool.put(second)
        await asyncio.gather(*waiting, late)
        assert pool.opened == 2 and len(pool.idle) == 2 and not pool.waiters
        return served

    assert asyncio.run(scenario()) == ["w0", "w1", "w2", "w3", "w4", "late"]


def test_a_cancelled_waiter_passes_its_connection_on(pool: lookup._LoopPool) -> None:
    async def scenario() -> None:
        held = [await pool.get(), await pool.get()]
        cancelled = asyncio.create_task(pool.get())
        patient = asyncio.create_task(pool.get())
        await asyncio.sleep(0)
        pool.put(held[0])  # handed to the first waiter ...
        cancelled.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert await asyncio.wait_for(patient, 1) is held[0]
        assert pool.opened == 2

    asyncio.run(scenario())


def test_a_discarded_connection_frees_its_slot_for_the_longest_waiter(
    pool: lookup._LoopPool,
) -> None:
    async def scenario() -> None:
        broken, other = await pool.get(), await pool.get()
        waiter = asyncio.create_task(pool.get())
        newcomer_started = asyncio.Event()

        async def newcomer() -> Any:
            newcomer_started.set()
            return await pool.get()

        await asyncio.sleep(0)
        pool.discard(broken)  # the slot goes to the waiter, who opens a new connection
        late = asyncio.create_task(newcomer())
        fresh = await asyncio.wait_for(waiter, 1)
        assert fresh is not broken and fresh is not other and not fresh.closed
        await newcomer_started.wait()
        assert not late.done() and pool.opened == 2  # never more than size
        pool.put(other)
        assert await asyncio.wait_for(late, 1) is other

    asyncio.run(scenario())


def test_a_failed_connect_passes_the_slot_on(
    pool: lookup._LoopPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    async def scenario() -> None:
        held = [await pool.get(), await pool.get()]
        first = asyncio.create_task(pool.get())
        second = asyncio.create_task(pool.get())
        await asyncio.sleep(0)
        calls = 0

        async def connect(*_args: Any, **_kwargs: Any) -> FakeConnection:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise psycopg.OperationalError("the server is restarting")
            return FakeConnection()

        monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
        pool.discard(held[0])
        with pytest.raises(psycopg.OperationalError):
            await first
        assert not (await asyncio.wait_for(second, 1)).closed
        assert pool.opened == 2

    asyncio.run(scenario())
