"""`store mail test` and `store mail send` as an operator runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.cli.main import main
from tests.mail.smtp_sink import SmtpSink


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith("STORE_") and name != "STORE_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    monkeypatch.setenv("STORE_DATA_DIR", str(data))
    monkeypatch.setenv("STORE_ENVIRONMENT", "test")
    monkeypatch.setenv("STORE_PUBLIC_URL", "http://store.test")
    monkeypatch.chdir(tmp_path)
    return data


def test_mail_test_through_smtp(
    cli_env: Path,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in smtp.settings().items():
        monkeypatch.setenv(f"STORE_{key.upper()}", str(value))
    assert main(["mail", "test", "--to", "Ops@Example.com"]) == 0
    assert "sent" in capsys.readouterr().out
    [msg] = smtp.wait_for(1)
    assert msg["To"] == "ops@example.com"
    # Nothing is left to deliver.
    assert main(["mail", "send", "--json"]) == 0
    assert '"sent": 0' in capsys.readouterr().out


def test_mail_test_without_smtp_writes_an_eml_file(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mail", "test", "--to", "ops@example.com"]) == 0
    [path] = (cli_env / "mail").glob("*.eml")
    assert str(path) in capsys.readouterr().out
    assert b"To: ops@example.com" in path.read_bytes()


def test_mail_test_errors(
    cli_env: Path,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["mail", "test", "--to", "not-an-address"]) == 1
    assert "valid e-mail address" in capsys.readouterr().err
    smtp.stop()
    for key, value in smtp.settings().items():
        monkeypatch.setenv(f"STORE_{key.upper()}", str(value))
    assert main(["mail", "test", "--to", "ops@example.com"]) == 1
    assert "was not delivered" in capsys.readouterr().err
