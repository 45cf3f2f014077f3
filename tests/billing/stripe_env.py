"""localstripe for tests: one process per test session on a free loopback port, flushed per
test, and a receiver that records its signed webhook deliveries so tests can relay them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

LAUNCHER = Path(__file__).with_name("localstripe_server.py")
SECRET_KEY = "sk_test_store_billing"
WEBHOOK_SECRET = "whsec_test_localstripe"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Delivery:
    body: bytes
    signature: str

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Recorder:
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, delivery: Delivery) -> None:
        with self.lock:
            self.deliveries.append(delivery)

    def wait_for(
        self, type_: str, object_id: str | None = None, timeout: float = 8.0, **match: Any
    ) -> Delivery:
        """The first delivery of this type (about this object), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for d in self.deliveries:
                    ev = d.event
                    obj = ev["data"]["object"]
                    if ev["type"] != type_:
                        continue
                    if object_id is not None and object_id not in json.dumps(obj):
                        continue
                    if all(obj.get(k) == v for k, v in match.items()):
                        return d
            time.sleep(0.05)
        raise AssertionError(f"no {type_} webhook for {object_id} within {timeout}s")


def _receiver(recorder: Recorder) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            recorder.add(Delivery(body, self.headers.get("stripe-signature", "")))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class LocalStripe:
    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.http = httpx.Client(base_url=self.base, auth=(SECRET_KEY, ""), timeout=10)
        self._wait_ready()
        self.recorder = Recorder()
        self.receiver = _receiver(self.recorder)
        url = f"http://127.0.0.1:{self.receiver.server_address[1]}/hook"
        r = self.http.post(
            "/_config/webhooks/store-tests", data={"url": url, "secret": WEBHOOK_SECRET}
        )
        r.raise_for_status()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("localstripe exited at start")
            try:
                if self.http.get("/v1/customers").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("localstripe did not start")

    def flush(self) -> None:
        self.http.delete("/_config/data").raise_for_status()
        with self.recorder.lock:
            self.recorder.deliveries.clear()

    def authenticate(self, pi_id: str, client_secret: str, success: bool = True) -> None:
        r = self.http.post(
            f"/v1/payment_intents/{pi_id}/_authenticate",
            data={"client_secret": client_secret, "success": "true" if success else "false"},
        )
        r.raise_for_status()

    def stop(self) -> None:
        self.receiver.shutdown()
        self.receiver.server_close()
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
