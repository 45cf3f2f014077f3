"""The outbox and its sender against a real SMTP server, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import session_scope, utcnow
from store.mail import outbox, sender
from store.mail.backends import FileBackend
from store.mail.models import OutboxMessage
from tests.mail.smtp_sink import SmtpSink


def _enqueue(factory: sessionmaker[Session], settings: Settings, count: int, **kw: object) -> list:
    ids = []
    with session_scope(factory) as session:
        for n in range(count):
            ids.append(
                outbox.enqueue(
                    session,
                    settings=settings,
                    template="test",
                    to=f"user{n}@example.com",
                    **kw,  # type: ignore[arg-type]
                )
            )
    return ids


def _rows(factory: sessionmaker[Session]) -> list[OutboxMessage]:
    with factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.to_addr)))


def test_committed_message_is_delivered_once_with_text_and_html(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    [message_id] = _enqueue(factory, mail_settings, 1)
    worker = sender.Sender(factory, mail_settings)
    assert worker.run_once() == {"sent": 1, "retry": 0, "failed": 0}
    assert worker.run_once() == {"sent": 0, "retry": 0, "failed": 0}
    [msg] = smtp.wait_for(1)
    [row] = _rows(factory)
    assert row.id == message_id and row.status == "sent" and row.attempts == 1
    assert msg["Message-ID"] == row.message_id
    assert msg["To"] == "user0@example.com"
    assert msg["From"] == "Store <no-reply@store.test>"
    assert msg["Subject"] == "Test message from store.test"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and "store mail test" in text.get_content()
    assert html is not None and "<p>" in html.get_content()
    assert "List-Unsubscribe" not in msg  # transactional


def test_rolled_back_transaction_sends_nothing(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        outbox.enqueue(session, settings=mail_settings, template="test", to="a@example.com")
        raise RuntimeError("the purchase failed")
    assert _rows(factory) == []
    assert sender.Sender(factory, mail_settings).run_once()["sent"] == 0
    time.sleep(0.2)
    assert smtp.received() == []


def test_same_cause_is_queued_once(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    first = _enqueue(factory, mail_settings, 1, dedupe_key="evt_1:receipt")
    second = _enqueue(factory, mail_settings, 1, dedupe_key="evt_1:receipt")
    assert first[0] is not None and second == [None]
    sender.Sender(factory, mail_settings).run_once()
    assert len(smtp.wait_for(1)) == 1
    time.sleep(0.2)
    assert len(smtp.received()) == 1


def test_permanent_refusal_fails_without_retry(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    smtp.refuse.add("user0@example.com")
    _enqueue(factory, mail_settings, 2)
    counts = sender.Sender(factory, mail_settings).run_once()
    assert counts == {"sent": 1, "retry": 0, "failed": 1}
    refused, delivered = _rows(factory)
    assert refused.status == "failed" and "550" in refused.last_error
    assert delivered.status == "sent"


def test_a_message_that_cannot_be_built_fails_for_good_with_the_reason(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    broken, fine = _enqueue(factory, mail_settings, 2)
    with session_scope(factory) as session:
        # A header no MIME message can carry (written before headers were checked).
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == broken)
            .values(headers={"X-Note": "one\nBcc: everyone@example.com"})
        )
    counts = sender.Sender(factory, mail_settings).run_once()
    assert counts == {"sent": 1, "retry": 0, "failed": 1}
    rows = {r.id: r for r in _rows(factory)}
    assert rows[broken].status == "failed" and rows[broken].attempts == 1
    assert "cannot be built" in rows[broken].last_error
    assert "X-Note" in rows[broken].last_error or "linefeed" in rows[broken].last_error
    assert rows[fine].status == "sent"
    assert len(smtp.wait_for(1)) == 1


def test_lapsed_claim_is_failed_not_sent_again(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    _enqueue(factory, mail_settings, 1)
    policy = sender.Policy.of(mail_settings)
    claimed = sender.claim(factory, policy)
    assert claimed is not None
    # The sender stops here (killed mid-delivery); its claim lapses.
    with session_scope(factory) as session:
        session.execute(update(OutboxMessage).values(claimed_until=utcnow() - timedelta(seconds=1)))
    assert sender.due_exists(factory)
    assert sender.Sender(factory, mail_settings).run_once()["sent"] == 0
    [row] = _rows(factory)
    assert row.status == "failed" and row.last_error == sender.LAPSED_ERROR
    # Were the first sender to finish after all, what it did is recorded.
    assert sender.record(factory, policy, claimed, None) == "sent"
    assert _rows(factory)[0].status == "sent"
    assert smtp.received() == []


def test_gives_up_after_the_last_attempt(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    smtp.stop()
    settings = mail_settings.model_copy(update={"mail_max_attempts": 2, "mail_retry_base": 0.01})
    _enqueue(factory, settings, 1)
    worker = sender.Sender(factory, settings)
    assert worker.run_once()["retry"] == 1
    time.sleep(0.05)
    assert worker.run_once()["failed"] == 1
    [row] = _rows(factory)
    assert row.status == "failed" and row.attempts == 2 and "127.0.0.1" in row.last_error


@pytest.mark.slow
def test_survives_the_smtp_server_down_for_a_minute(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink
) -> None:
    downtime = float(os.environ.get("STORE_TEST_SMTP_DOWNTIME", "60"))
    # Retries every 2 s at most here, so allow enough of them to outlast the downtime (the
    # defaults, 30 s doubling to an hour, ten attempts, span about three hours).
    # A generous reply timeout too: one that runs out after the message went through makes
    # the sender try again (SMTP delivers at least once), which a busy machine must not cause.
    mail_settings = mail_settings.model_copy(
        update={"mail_max_attempts": 100, "mail_smtp_timeout": 30.0}
    )
    smtp.stop()
    ids = _enqueue(factory, mail_settings, 5)
    stop = threading.Event()
    worker = sender.Sender(factory, mail_settings)
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    try:
        time.sleep(downtime)
        # The sender kept trying while the server was down (a loaded machine may take a
        # while to reach a second attempt), and sent nothing anywhere.
        deadline = time.monotonic() + 30
        while max(r.attempts for r in _rows(factory)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        during = _rows(factory)
        assert all(r.status in ("pending", "sending") for r in during)
        assert max(r.attempts for r in during) > 1
        assert all(
            "127.0.0.1" in r.last_error for r in during if r.attempts and r.status == "pending"
        )
        smtp.start()
        got = smtp.wait_for(5, timeout=mail_settings.mail_retry_max * 5 + 10)
        time.sleep(mail_settings.mail_retry_max)  # anything sent twice would be here now
    finally:
        stop.set()
        thread.join()
    got = smtp.received()
    assert sorted(m["To"] for m in got) == [f"user{n}@example.com" for n in range(5)]
    assert len({m["Message-ID"] for m in got}) == 5
    assert all(r.status == "sent" for r in _rows(factory))
    assert len(ids) == 5


def test_two_sender_processes_never_send_the_same_message(
    factory: sessionmaker[Session], mail_settings: Settings, smtp: SmtpSink, tmp_path: Path
) -> None:
    count = 40
    _enqueue(factory, mail_settings, count)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORE_")}
    env.update(
        STORE_DATA_DIR=str(mail_settings.data_dir),
        STORE_DATABASE_URL=str(mail_settings.database_url),
        STORE_SECRET_KEY="test-secret-key-0123456789",
        STORE_PUBLIC_URL="http://store.test",
        STORE_ENVIRONMENT="test",
        STORE_MAIL_SMTP_HOST="127.0.0.1",
        STORE_MAIL_SMTP_PORT=str(smtp.port),
        STORE_MAIL_SMTP_SECURITY="none",
    )
    command = [sys.executable, "-m", "store.cli.main", "mail", "send", "--json"]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    got = smtp.wait_for(count)
    time.sleep(0.2)
    got = smtp.received()
    ids = [m["Message-ID"] for m in got]
    assert len(ids) == count and len(set(ids)) == count
    assert all(r.status == "sent" and r.attempts == 1 for r in _rows(factory))


def test_file_backend_writes_eml_files(
    factory: sessionmaker[Session], mail_settings: Settings, tmp_path: Path
) -> None:
    [message_id] = _enqueue(factory, mail_settings, 1)
    backend = FileBackend(tmp_path / "mail", sender=mail_settings.resolved_mail_from)
    assert sender.Sender(factory, mail_settings, backend=backend).run_once()["sent"] == 1
    path = tmp_path / "mail" / f"{message_id}.eml"
    data = path.read_bytes()
    assert b"Subject: Test message from store.test" in data
    assert path.stat().st_mode & 0o077 == 0
