"""Mail tests: a real SMTP server on loopback and a database of their own (the sender
commits in transactions of its own, like the processes it runs in)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from store.config import Settings
from store.db import make_engine, make_sessionmaker
from store.mail.models import MailOptOut, OutboxMessage
from tests import pg
from tests.mail.smtp_sink import SmtpSink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def mail_db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pg.migrated_database(backend, tmp_path_factory.mktemp("mail-db"), "mail") as url:
        yield url


@pytest.fixture
def mail_engine(mail_db_url: str) -> Iterator[Engine]:
    engine = make_engine(mail_db_url)
    yield engine
    with engine.begin() as conn:
        conn.execute(delete(OutboxMessage))
        conn.execute(delete(MailOptOut))
    engine.dispose()


@pytest.fixture
def factory(mail_engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(mail_engine)


@pytest.fixture
def mail_settings(tmp_path: Path, mail_db_url: str, smtp: SmtpSink) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=mail_db_url,
        secret_key="test-secret-key-0123456789",
        public_url="http://store.test",
        environment="test",
        mail_retry_base=0.2,
        mail_retry_max=2.0,
        mail_poll_interval=0.05,
        mail_smtp_timeout=5.0,
        **smtp.settings(),
    )
