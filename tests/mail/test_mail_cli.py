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


def test_outbox_and_retry(
    cli_env: Path,
    smtp: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    smtp.refuse.add("gone@example.com")
    for key, value in smtp.settings().items():
        monkeypatch.setenv(f"STORE_{key.upper()}", str(value))
    assert main(["mail", "test", "--to", "gone@example.com"]) == 1
    assert main(["mail", "test", "--to", "ops@example.com"]) == 0
    capsys.readouterr()
    assert main(["mail", "outbox", "--failed", "--json"]) == 0
    [failed] = json.loads(capsys.readouterr().out)
    assert failed["to"] == "gone@example.com" and "550" in failed["last_error"]
    assert main(["mail", "outbox"]) == 0
    out = capsys.readouterr()
    assert "ops@example.com" in out.out and "failed 1, sent 1" in out.err

    smtp.refuse.clear()
    assert main(["mail", "retry", failed["id"]]) == 0
    assert main(["mail", "send"]) == 0
    assert sorted(m["To"] for m in smtp.wait_for(2)) == ["gone@example.com", "ops@example.com"]
    capsys.readouterr()
    # Sent messages are not retried; unknown ids and non-ids are clear errors.
    assert main(["mail", "retry", failed["id"]]) == 1
    assert "Only failed messages" in capsys.readouterr().err
    assert main(["mail", "retry", "00000000-0000-0000-0000-000000000000"]) == 1
    assert "No such message" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["mail", "retry", "nope"])
    assert usage.value.code == 2
