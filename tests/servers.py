"""Store processes for tests that need more than one: uvicorn serving an app factory on a
free loopback port, waited for until it answers, stopped (and killed when it will not)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from store import PROJECT_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uvicorn_argv(factory: str, port: int) -> list[str]:
    """``factory`` ("package.module:make_app") served by uvicorn on 127.0.0.1:``port``."""
    return [
        *(sys.executable, "-m", "uvicorn", "--factory", factory),
        *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
    ]


def wait_until_up(proc: subprocess.Popen[bytes], url: str, timeout: float = 120) -> None:
    """Until ``url`` answers at all; RuntimeError (with the end of its stderr when piped)
    when the process exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"the app exited: {err[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"the app did not answer {url} in {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Terminate; kill when it has not ended after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


@contextmanager
def uvicorn_apps(
    factory: str, env: dict[str, str], count: int = 2, probe: str = "/api/v1/openapi.json"
) -> Iterator[list[str]]:
    """``count`` processes of ``factory`` (the same ``env``: one database), each on its own
    port; their base URLs once every one answers ``probe``."""
    procs, bases = [], []
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    uvicorn_argv(factory, port),
                    cwd=PROJECT_DIR,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for proc, base in zip(procs, bases, strict=True):
            wait_until_up(proc, f"{base}{probe}")
        yield bases
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            stop(proc)
