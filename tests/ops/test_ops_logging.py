"""Request ids (incoming X-Request-ID validated and echoed, or made) and JSON logs."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from store.observability.logging import (
    JsonFormatter,
    TextFormatter,
    resolve_format,
    valid_request_id,
)

HEX_ID = re.compile(r"[0-9a-f]{32}")


def test_a_request_id_is_made_and_returned(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert HEX_ID.fullmatch(first) and HEX_ID.fullmatch(second)
    assert first != second


@pytest.mark.parametrize(
    "incoming",
    ["abc-123", "0af7651916cd43dd8448eb211c80319c", "req_01HZ:edge.1/2+3=@x", "x" * 128],
)
def test_a_valid_incoming_request_id_is_kept(client: TestClient, incoming: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming", ["", "has space", 'quote"d', "x" * 129, "-leading-dash", "tab\there", "é"]
)
def test_an_unsafe_incoming_request_id_is_replaced(client: TestClient, incoming: str) -> None:
    assert valid_request_id(incoming) is None
    response = client.get("/healthz", headers={"X-Request-ID": incoming.encode("utf-8")})
    assert HEX_ID.fullmatch(response.headers["x-request-id"])


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    response = client.get("/api/v1/products/acme/none", headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "trace-404"


def test_access_log_in_json_with_request_id_and_route(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="store.access"):
        client.get("/api/v1/products/acme/app?secret=1", headers={"X-Request-ID": "rid-42"})
    [record] = [r for r in caplog.records if r.name == "store.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "store.access"
    assert line["level"] == "info"
    assert line["request_id"] == "rid-42"
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/products/acme/app"  # never the query string
    assert line["route"] == "/api/v1/products/{org}/{name}"
    assert line["status"] == 404
    assert isinstance(line["duration_ms"], float)
    assert line["message"].startswith("GET /api/v1/products/acme/app 404 ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])


def test_probes_are_logged_at_debug_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="store.access"):
        client.get("/healthz")
        client.get("/metrics")
    assert not [r for r in caplog.records if r.name == "store.access"]


def test_logs_inside_a_request_carry_its_id(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("store.test")

    def in_thread() -> None:
        log.info("from the thread pool")

    async def endpoint(request: Request) -> PlainTextResponse:
        log.info("from the event loop", extra={"product": "acme/app"})
        await run_in_threadpool(in_thread)
        return PlainTextResponse("ok")

    app.add_route("/test-logging", endpoint)
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="store.test"):
        client.get("/test-logging", headers={"X-Request-ID": "rid-7"})
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "store.test"
    ]
    assert [(x["message"], x["request_id"]) for x in lines] == [
        ("from the event loop", "rid-7"),
        ("from the thread pool", "rid-7"),
    ]
    assert lines[0]["product"] == "acme/app"
    outside = logging.LogRecord("store.test", logging.INFO, __file__, 1, "later", (), None)
    assert "request_id" not in json.loads(JsonFormatter().format(outside))


def test_json_lines_hold_exceptions_and_text_lines_the_id() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "store.x", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed x"
    assert "ValueError: boom" in line["exc"]
    plain = logging.LogRecord("store.x", logging.INFO, __file__, 1, "hello", (), None)
    assert TextFormatter().format(plain).endswith("INFO store.x [-] hello")


def test_log_format_follows_the_environment() -> None:
    assert resolve_format("auto", "production") == "json"
    assert resolve_format("auto", "development") == "text"
    assert resolve_format("text", "production") == "text"
    assert resolve_format("json", "test") == "json"


def test_the_serve_log_config_writes_json_lines() -> None:
    code = (
        "import logging, logging.config\n"
        "from store.observability.logging import log_config\n"
        "logging.config.dictConfig(log_config('json', 'info'))\n"
        "logging.getLogger('store.x').info('hello %s', 'world', extra={'n': 1})\n"
        "logging.getLogger('uvicorn.error').info('started')\n"
        "logging.getLogger('uvicorn.access').info('dropped: the store logs access')\n"
        "logging.getLogger('alembic.runtime.migration').info('dropped: too chatty')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["logger"], x["message"]) for x in lines] == [
        ("store.x", "hello world"),
        ("uvicorn.error", "started"),
    ]
    assert lines[0]["n"] == 1


def test_access_lines_are_written_in_batches_and_other_lines_at_once() -> None:
    import io

    from store.observability.logging import BatchedStreamHandler

    stream = io.StringIO()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("store.access")
    other = logging.getLogger("uvicorn.error")
    saved = [(lg, lg.propagate, lg.level) for lg in (logger, other)]
    for lg in (logger, other):
        lg.propagate = False
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        logger.info("first")
        logger.info("second")
        assert stream.getvalue() == ""  # waiting for the batch
        logger.warning("trouble")  # written at once, after what came before it
        assert stream.getvalue() == "INFO first\nINFO second\nWARNING trouble\n"
        logger.info("later")
        handler.flush()
        assert stream.getvalue().endswith("WARNING trouble\nINFO later\n")
        logger.info("waiting")
        # Any other line (a server stopping, say) is written at once, after the batch.
        other.info("Application shutdown complete.")
        assert stream.getvalue().endswith("INFO waiting\nINFO Application shutdown complete.\n")
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


def test_the_batch_is_written_within_the_flush_interval() -> None:
    code = (
        "import logging, logging.config, os, sys, time\n"
        "from store.observability.logging import FLUSH_S, log_config\n"
        "logging.config.dictConfig(log_config('text', 'info'))\n"
        "logging.getLogger('store.access').info('waiting line')\n"
        "time.sleep(FLUSH_S * 4)\n"
        "os._exit(0)  # no logging.shutdown: only the background flush can have written it\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "waiting line" in out


def test_text_lines_carry_the_time_logging_would_give_them() -> None:
    formatter = TextFormatter()
    plain = logging.Formatter()
    for created in (1_800_000_000.0, 1_800_000_000.5, 1_800_000_000.999, 1_800_000_001.25):
        record = logging.LogRecord("store.access", logging.INFO, __file__, 0, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert formatter.formatTime(record) == plain.formatTime(record)
        assert formatter.formatTime(record, "%H") == plain.formatTime(record, "%H")


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
@pytest.mark.parametrize("created", [1_800_000_000.0, 1_800_000_000.5, 1_800_000_001.9996])
def test_access_lines_made_without_a_record_are_the_records_lines(
    formatter: type[logging.Formatter], created: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``store serve`` configures logging, the access line is made without a LogRecord:
    the same characters, fields and order as the record's line; with any other handler or
    filter on the way, it is a record again."""
    import io

    from store.observability import middleware
    from store.observability.logging import (
        REQUEST_ID,
        BatchedStreamHandler,
        direct_handler,
        stamp_records,
    )

    stamp_records()
    monkeypatch.setattr("time.time", lambda: created)  # the record's time
    monkeypatch.setattr(middleware, "time", lambda: created)
    stream = io.StringIO()
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(formatter())
    root, access = logging.getLogger(), middleware.access_log
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(access, "level", logging.INFO)
    monkeypatch.setattr(logging.getLogger("store"), "handlers", [])
    # As serving configures them, whatever a test before this one configured.
    for logger in (access, logging.getLogger("store")):
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)
    monkeypatch.setattr(root, "level", logging.INFO)
    context = REQUEST_ID.set("req-1")
    lines = []
    try:
        for client in (("10.0.0.7", 5), None):
            scope = {"method": "GET", "path": "/token", "client": client}
            for direct in (True, False):
                if not direct:
                    access.addFilter(_keep)
                try:
                    assert (direct_handler(access, logging.INFO) is not None) is direct
                    middleware._log_access(scope, "/token", 200, 0.0012345)
                finally:
                    access.removeFilter(_keep)
                handler.flush()
                lines.append(stream.getvalue())
                stream.seek(0)
                stream.truncate()
    finally:
        REQUEST_ID.reset(context)
    assert lines[0] == lines[1] and lines[2] == lines[3]
    assert lines[0].count("\n") == 1 and "GET /token 200 1.23ms" in lines[0]
    if formatter is JsonFormatter:
        line = json.loads(lines[0])
        assert line["request_id"] == "req-1" and line["client"] == "10.0.0.7"
        assert json.loads(lines[2])["client"] is None
    # Another handler on the way (a test's capture, an operator's file): records again.
    monkeypatch.setattr(root, "handlers", [handler, logging.NullHandler()])
    assert direct_handler(access, logging.INFO) is None


def _keep(record: logging.LogRecord) -> bool:
    return True
