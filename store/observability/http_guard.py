"""A deadline for request headers: a client that does not finish sending a request's
headers within ``STORE_HEADER_TIMEOUT`` seconds (10 by default) is disconnected.

uvicorn closes idle keep-alive connections, but once a client has sent the first byte of a
request it waits for the rest of the headers for ever, so a few slow clients ("slowloris")
could hold every connection slot. These protocol classes (the httptools and h11 ones
uvicorn would pick, with a timer) are what ``store serve`` runs: the deadline starts with
the first byte of a request (not reset by later bytes), and when it passes while the
request's headers are not complete, the connection is closed. A connection that sends
nothing at all is closed after ``STORE_IDLE_CONNECTION_TIMEOUT`` seconds (60 by default).
A request whose headers arrived in time is never cut off, however long its body or
response take. (Counting from the first byte, not from
the connection's opening, keeps a busy client, which may connect well before it writes,
from being taken for a slow one.)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0
CONFIG_ATTRIBUTE = "store_header_timeout"  # set on uvicorn's Config by store serve
IDLE_CONFIG_ATTRIBUTE = "store_idle_connection_timeout"
CONFIRM_S = 0.5  # a second look before closing (see _header_deadline)
IDLE_S = 60.0  # a new connection that sends nothing at all (the default)


class _HeaderDeadline:
    """Mixed into uvicorn's protocol classes (they keep ``cycle``, ``loop``, ``transport``)."""

    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _header_timer: asyncio.TimerHandle | None = None
    _header_timeout: float = DEFAULT_HEADER_TIMEOUT
    _idle_timeout: float = IDLE_S

    _header_confirming: bool = False
    _awaiting_first_byte: bool = True

    def _arm_header_deadline(self) -> None:
        """Waiting for a request: at most the idle timeout for its first byte (uvicorn's
        keep-alive timeout closes an idle kept-alive connection sooner)."""
        self._awaiting_first_byte = True
        self._arm(self._idle_timeout)

    def _request_began(self) -> None:
        """The first byte of a request: its headers must be complete within the deadline."""
        if self._awaiting_first_byte:
            self._awaiting_first_byte = False
            # The second look (CONFIRM_S) is part of the deadline, not added to it.
            self._arm(max(0.1, self._header_timeout - CONFIRM_S))

    def _arm(self, seconds: float) -> None:
        self._disarm_header_deadline()
        self._header_confirming = False
        self._header_timer = self.loop.call_later(seconds, self._header_deadline)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline(self) -> None:
        self._header_timer = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return  # a request is being served: its headers came in time
        if not self._header_confirming:
            # An event loop runs due timers before it reads its sockets (uvloop), so on a
            # loop running late the headers may be waiting unread: look again once the
            # loop has read what arrived.
            self._header_confirming = True
            self._header_timer = self.loop.call_later(CONFIRM_S, self._header_deadline)
            return
        if not self.transport.is_closing():
            self.transport.close()


class _Guarded(_HeaderDeadline):
    """The hooks, the same for both protocol classes: put before uvicorn's class in the
    bases, so ``super()`` is uvicorn's method."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)  # type: ignore[call-arg]
        self._header_timeout = float(getattr(config, CONFIG_ATTRIBUTE, DEFAULT_HEADER_TIMEOUT))
        self._idle_timeout = float(getattr(config, IDLE_CONFIG_ATTRIBUTE, IDLE_S))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        self._request_began()
        super().data_received(data)  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm_header_deadline()


class GuardedH11Protocol(_Guarded, H11Protocol):
    pass


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn uses h11
    GuardedHttpToolsProtocol: type[asyncio.Protocol] | None = None
else:

    class _GuardedHttpTools(_Guarded, HttpToolsProtocol):
        pass

    GuardedHttpToolsProtocol = _GuardedHttpTools


def protocol_path() -> str:
    """The import path of the guarded protocol uvicorn should run (its "auto" choice)."""
    if GuardedHttpToolsProtocol is not None:
        return f"{__name__}:GuardedHttpToolsProtocol"
    return f"{__name__}:GuardedH11Protocol"
