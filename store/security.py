"""Passwords (argon2id), prefixed checksummed tokens, and constant-time comparison.

An argon2id check costs about 0.2 CPU-seconds and 64 MiB, so a burst of them is the
cheapest way to exhaust a server. Every check and every new hash runs in one of a few
slots per process (:class:`CheckSlots`, as many as the machine has cores by default): a
check that finds no free slot within a short wait is refused with 429 and ``Retry-After``
(:class:`ChecksBusy`) instead of queueing without bound. Checks run on threads of their
own, one per slot, at a lower scheduling priority than the event loop (so a burst of
checks does not slow the requests that need little CPU), and waiting for a slot holds no
thread when the caller is on the event loop (``verify_password_async``).

A caller that must do work of its own before a check (take a rate-limit attempt in the
database) holds a slot for it first (:meth:`CheckSlots.hold_async`): the requests that find
every slot busy are refused before they have cost anything but a place in the queue, so
a burst of guesses does at most as much database work at once as argon2 work.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import os
import secrets
import threading
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store.errors import TooManyRequests

T = TypeVar("T")

_hasher = PasswordHasher()  # argon2id with the library's current defaults
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 30
_CHECK_LEN = 6

TOKEN_PREFIXES = {"personal": "stp_", "robot": "str_", "refresh": "stf_"}


class ChecksBusy(TooManyRequests):
    """Every password-check slot of this process stayed busy for the whole wait (429)."""


class _Waiter:
    """One caller queued for a slot; its fields change under the slots' lock only."""

    __slots__ = ("abandoned", "granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.granted = False
        self.abandoned = False


class CheckSlots:
    """At most ``slots`` password checks at once in this process, first come first served;
    a caller waits at most ``wait_s`` seconds for one. Threads and event loops share them."""

    def __init__(self, slots: int | None = None, wait_s: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.slots = 0
        self.configure(slots, wait_s)

    def configure(self, slots: int | None = None, wait_s: float = 2.0) -> None:
        with self._lock:
            count = max(1, slots or os.cpu_count() or 1)
            executor = self._executor
            if executor is None or count != self.slots:
                if executor is not None:
                    executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(
                    count, thread_name_prefix="password-check", initializer=_lower_priority
                )
            self.slots = count
            self.wait_s = wait_s
            self._free = self.slots
            self._waiters: deque[_Waiter] = deque()

    def run(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on a check thread once a slot is free (waiting in this thread)."""
        if not self._acquire():
            raise self.refused()
        return self._submit(func, *args).result()

    async def run_async(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on a check thread once a slot is free (waiting on the loop)."""
        if not await self._acquire_async():
            raise self.refused()
        return await asyncio.wrap_future(self._submit(func, *args))

    @contextlib.asynccontextmanager
    async def hold_async(self) -> AsyncIterator[HeldSlot]:
        """A slot taken now (waiting on the loop; ChecksBusy after the wait) for work to do
        before the check that will run in it; given back on exit unless a check was
        submitted in it (that check gives it back when it ends)."""
        if not await self._acquire_async():
            raise self.refused()
        held = HeldSlot(self)
        try:
            yield held
        finally:
            held.give_back()

    def _submit(self, func: Callable[..., T], *args: Any) -> Future[T]:
        # The slot is given back when the check ends, even if its caller went away.
        assert self._executor is not None
        try:
            future = self._executor.submit(func, *args)
        except BaseException:
            self.release()
            raise
        future.add_done_callback(lambda _done: self.release())
        return future

    @property
    def busy(self) -> int:
        return self.slots - self._free

    def refused(self) -> ChecksBusy:
        wait = max(1, math.ceil(self.wait_s))
        return ChecksBusy(
            f"Too many password checks at once; try again in {wait} s.",
            headers={"Retry-After": str(wait)},
        )

    def _take_or_queue(self, wake: Callable[[], None]) -> _Waiter | None:
        """None when a slot was free and is now taken; else the queued waiter."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return None
            waiter = _Waiter(wake)
            self._waiters.append(waiter)
            return waiter

    def _settle(self, waiter: _Waiter) -> bool:
        """After waiting: True when the slot was handed over, else give up the place."""
        with self._lock:
            if waiter.granted:
                return True
            waiter.abandoned = True
            return False

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.abandoned:
                    waiter.granted = True
                    try:
                        waiter.wake()
                    except RuntimeError:  # its event loop is gone: hand the slot on
                        waiter.granted, waiter.abandoned = False, True
                        continue
                    return
            self._free = min(self.slots, self._free + 1)

    def _acquire(self) -> bool:
        event = threading.Event()
        waiter = self._take_or_queue(event.set)
        if waiter is None:
            return True
        event.wait(self.wait_s)
        return self._settle(waiter)

    async def _acquire_async(self) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(done)

        waiter = self._take_or_queue(wake)
        if waiter is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(future), self.wait_s)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if self._settle(waiter):
                self.release()
            raise
        return self._settle(waiter)


class HeldSlot:
    """A slot taken by :meth:`CheckSlots.hold_async`, for one check."""

    __slots__ = ("_slots",)

    def __init__(self, slots: CheckSlots) -> None:
        self._slots: CheckSlots | None = slots

    def submit(self, func: Callable[..., T], *args: Any) -> Future[T]:
        """Start ``func(*args)`` on a check thread in this slot (once only)."""
        slots, self._slots = self._slots, None
        if slots is None:
            raise RuntimeError("this slot was used or given back already")
        return slots._submit(func, *args)

    async def run_async(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(func, *args))

    def give_back(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()


def _lower_priority() -> None:
    """Check threads run at a lower priority than the event loop (Linux: per thread), so a
    burst of checks leaves the CPU to the requests that need little of it."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


# The process's password-check slots (``create_app`` sizes them from the settings).
password_checks = CheckSlots()


def hash_password(password: str) -> str:
    return password_checks.run(_hash, password)


def _hash(password: str) -> str:
    return _hasher.hash(password)


def check_password(password_hash: str, password: str) -> bool:
    """The argon2id comparison itself, outside any slot: call ``verify_password``."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_password(password_hash: str, password: str) -> bool:
    """Whether the password matches, checked in one of the process's slots (ChecksBusy
    when none frees up in time)."""
    return password_checks.run(_check, password_hash, password)


async def verify_password_async(
    password_hash: str, password: str, slot: HeldSlot | None = None
) -> bool:
    """``verify_password`` for coroutines: waits for its slot on the event loop, holding no
    thread (or runs in ``slot`` when one is held already)."""
    if slot is not None:
        return await slot.run_async(_check, password_hash, password)
    return await password_checks.run_async(_check, password_hash, password)


def _check(password_hash: str, password: str) -> bool:
    return check_password(password_hash, password)  # looked up at call time (tests patch it)


def submit_password_check(slot: HeldSlot, password_hash: str, password: str) -> Future[bool]:
    """Start ``verify_password`` in a slot already held; its future."""
    return slot.submit(_check, password_hash, password)


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


_dummy_hash: str | None = None


def use_cheap_hashing_for_tests() -> None:
    """Still argon2id, with tiny costs: for test suites only, never for a running store."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    _dummy_hash = None


_dummy_lock = threading.Lock()


def _dummy() -> str:
    """One hash made once per process (and per hasher), checked for unknown accounts."""
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
        return _dummy_hash


def burn_password_check(password: str) -> None:
    """Spend what a real check costs when the account does not exist, so the time taken
    does not reveal which usernames exist: one check against a constant hash, in a slot
    like any other check (the constant hash is made there too, the first time)."""
    password_checks.run(_burn, password)


async def burn_password_check_async(password: str, slot: HeldSlot | None = None) -> None:
    """``burn_password_check`` for coroutines, in ``slot`` when one is held already."""
    if slot is not None:
        await slot.run_async(_burn, password)
    else:
        await password_checks.run_async(_burn, password)


def _burn(password: str) -> None:
    _check(_dummy(), password)


def _base62(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rem = divmod(number, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def generate_token(kind: str) -> str:
    """A new secret such as ``stp_<30 random base62><6 base62 CRC32>``.

    The prefix and checksum let secret scanners recognise a leaked token without a lookup.
    """
    prefix = TOKEN_PREFIXES[kind]
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    check = _base62(zlib.crc32(f"{prefix}{body}".encode()), _CHECK_LEN)
    return f"{prefix}{body}{check}"


def token_kind(token: str) -> str | None:
    """The kind of a well-formed token whose checksum matches, else None."""
    for kind, prefix in TOKEN_PREFIXES.items():
        if token.startswith(prefix):
            rest = token[len(prefix) :]
            if len(rest) != _BODY_LEN + _CHECK_LEN:
                return None
            body, check = rest[:_BODY_LEN], rest[_BODY_LEN:]
            expected = _base62(zlib.crc32(f"{prefix}{body}".encode()), _CHECK_LEN)
            return kind if hmac.compare_digest(check, expected) else None
    return None


def hash_token(token: str) -> str:
    # Tokens carry 178 bits of randomness, so a fast hash is enough (no salt needed).
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
