"""Bounded requests: bodies over their cap are refused with 413 before they are read, and a
client that does not finish its headers is disconnected (raw sockets against store serve)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store.accounts.models import Account
from store.app import create_app
from store.config import Settings
from store.request_limits import DEFAULT_MAX_BODY
from tests.hardening.serving import store_serve
from tests.web.helpers import HTML, csrf_of

MIB = 1024 * 1024


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


def test_a_declared_body_over_the_cap_is_refused(client: TestClient, session: Session) -> None:
    body = b'{"username": "big", "email": "big@example.com", "password": "' + b"x" * MIB + b'"}'
    r = client.post("/api/v1/accounts", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"error": "too_large", "detail": "The request body is larger than 1 MiB"}
    assert session.scalar(select(func.count(Account.id))) == 0


def test_a_streamed_body_over_the_cap_is_refused(client: TestClient) -> None:
    r = client.post(
        "/api/v1/accounts",
        content=_chunks(DEFAULT_MAX_BODY + 1),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # Just under the cap is read and judged as usual (not JSON: 422).
    r = client.post(
        "/api/v1/accounts",
        content=_chunks(DEFAULT_MAX_BODY - 10),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_a_malformed_content_length_is_a_bad_request(client: TestClient) -> None:
    r = client.post("/api/v1/accounts", content=b"{}", headers={"Content-Length": "12x"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"


def test_streamed_over_the_cap_on_plain_routes(client: TestClient, settings: Settings) -> None:
    """The registry notifications are a plain route, outside the error handlers: the
    middleware answers for it when the body passes its cap (4 MiB) while being read."""
    r = client.post(
        "/registry/events",
        content=_chunks(5 * MIB),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {settings.resolved_notify_secret}",
        },
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert "4 MiB" in r.json()["detail"]
    # Declared over the cap: refused before the credentials are even looked at.
    r = client.post(
        "/registry/events",
        content=b" " * (5 * MIB),
        headers={"Content-Type": "application/json", "Authorization": "Bearer x"},
    )
    assert r.status_code == 413
    # /token keeps its own, smaller cap on its form (16 KiB).
    r = client.post("/token", content=_chunks(64 * 1024))
    assert r.status_code == 400 and "too large" in r.text


def test_the_notifications_route_takes_more_than_the_default(client: TestClient) -> None:
    r = client.post(
        "/registry/events",
        content=b" " * (2 * MIB),
        headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
    )
    assert r.status_code == 401  # read and judged: the cap there is 4 MiB


def test_a_page_form_over_the_cap_gets_a_page(client: TestClient) -> None:
    token = csrf_of(client.get("/login", headers=HTML).text)
    r = client.post(
        "/login",
        data={"login": "x" * (DEFAULT_MAX_BODY + 10), "password": "p", "csrf_token": token},
        headers=HTML,
    )
    assert r.status_code == 413
    assert "text/html" in r.headers["content-type"] and "Too large" in r.text


def test_the_cap_is_a_setting(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    small = settings.model_copy(update={"max_body_bytes": 32 * 1024})
    app: FastAPI = create_app(small, migrate=False)
    app.state.engine.dispose()
    app.state.sessionmaker = session_factory
    with TestClient(app, base_url="http://store.test") as c:
        r = c.post("/api/v1/accounts", content=b" " * (33 * 1024))
        assert r.status_code == 413 and "32 KiB" in r.json()["detail"]
        r = c.post("/api/v1/accounts", content=b" " * (31 * 1024))
        assert r.status_code == 422


# --- against store serve, with raw sockets ---------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'store.db'}"


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.mark.e2e
def test_serve_refuses_a_large_body_without_reading_it(tmp_path: Path, sqlite_url: str) -> None:
    with store_serve(tmp_path, sqlite_url, workers=1) as served:
        with socket.create_connection((served.host, served.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
            )
            # No body is sent: an answer proves none was waited for.
            answer = _read_all(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"too_large"' in answer


@pytest.mark.e2e
def test_serve_drops_a_client_whose_headers_never_end(tmp_path: Path, sqlite_url: str) -> None:
    """Default deadline (10 s): a socket timeout of 30 s fails the test if it is not kept."""
    with store_serve(tmp_path, sqlite_url, workers=1) as served:
        with socket.create_connection((served.host, served.port), timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            assert _read_all(sock) == b""  # closed by the server, no answer
            waited = time.monotonic() - started
        print(f"dropped after {waited:.1f} s")
        # Meanwhile, and afterwards, other clients are served.
        with socket.create_connection((served.host, served.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.e2e
def test_the_header_deadline_is_a_setting_and_counts_from_the_start(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A client sending one header byte a second is dropped (the deadline is not reset by
    each byte); a request whose headers came in time is served however slow its body is;
    a kept-alive connection gets a new deadline for its next request."""
    with store_serve(tmp_path, sqlite_url, workers=1, env={"STORE_HEADER_TIMEOUT": "2"}) as served:
        with socket.create_connection((served.host, served.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            closed = False
            for _ in range(20):
                try:
                    sock.sendall(b"X")
                except OSError:
                    closed = True
                    break
                time.sleep(1)
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                sock.settimeout(30)
            assert closed, "a client dribbling its headers was never dropped"

        with socket.create_connection((served.host, served.port), timeout=30) as sock:
            sock.sendall(
                b"POST /api/v1/accounts HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{"
            )
            time.sleep(3)  # longer than the header deadline, within the body
            sock.sendall(b"}")
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 422"), head[:200]
            # Kept alive: the next request on the same connection is answered too.
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"HTTP/1.1 200" in _read_all(sock)


def test_an_idle_connection_is_closed_after_a_minute_by_default() -> None:
    """The idle deadline's default and where store serve puts it for its workers."""
    from types import SimpleNamespace

    from store.observability import http_guard
    from store.observability.serving import guard_headers

    settings = Settings()
    assert settings.idle_connection_timeout == 60.0
    config = SimpleNamespace()
    guard_headers(config, settings)
    assert getattr(config, http_guard.IDLE_CONFIG_ATTRIBUTE) == 60.0
    assert getattr(config, http_guard.CONFIG_ATTRIBUTE) == 10.0


@pytest.mark.e2e
def test_serve_closes_a_connection_that_sends_nothing(tmp_path: Path, sqlite_url: str) -> None:
    """A client that connects and sends nothing is disconnected once the idle deadline
    (here 3 s instead of 60) has passed, not before; others are served meanwhile."""
    env = {"STORE_IDLE_CONNECTION_TIMEOUT": "3"}
    with (
        store_serve(tmp_path, sqlite_url, workers=1, env=env) as served,
        socket.create_connection((served.host, served.port), timeout=30) as sock,
    ):
        sock.settimeout(1)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # still open after a second
        with socket.create_connection((served.host, served.port), timeout=30) as other:
            other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(other).startswith(b"HTTP/1.1 200")
        sock.settimeout(30)  # a socket timeout fails the test if the deadline is not kept
        assert _read_all(sock) == b""  # closed by the server, no answer
