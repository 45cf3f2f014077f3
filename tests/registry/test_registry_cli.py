"""`store keys ...` and `store registry config` in-process, against their own SQLite file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from store.cli.main import main


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    for name in list(os.environ):
        if name.startswith("STORE_") and name != "STORE_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("STORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STORE_SECRET_KEY", "cli-secret-0123456789")
    monkeypatch.setenv("STORE_PUBLIC_URL", "http://127.0.0.1:8123")
    monkeypatch.chdir(tmp_path)

    def _run(*argv: str) -> tuple[int, Any, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        try:
            data = json.loads(out)
        except json.JSONDecodeError:
            data = out
        return code, data, err

    return _run


def test_rotation_procedure(run, tmp_path: Path) -> None:
    code, written, _ = run(
        "registry",
        "config",
        "--registry-url",
        "http://127.0.0.1:5111",
        "--out",
        str(tmp_path / "reg"),
        "--json",
    )
    assert code == 0
    assert written["realm"] == "http://127.0.0.1:8123/token" and len(written["trusted_kids"]) == 1
    old = written["trusted_kids"][0]
    cfg = yaml.safe_load(Path(written["config"]).read_text())
    assert cfg["auth"]["token"]["rootcertbundle"] == written["bundle"]

    code, new, _ = run("keys", "rotate", "--purpose", "registry", "--json")
    assert code == 0 and new["state"] == "published"
    code, listed, _ = run("keys", "list", "--purpose", "registry", "--json")
    assert {k["kid"]: k["state"] for k in listed} == {old: "signing", new["kid"]: "published"}

    code, written, _ = run("registry", "config", "--out", str(tmp_path / "reg"), "--json")
    assert set(written["trusted_kids"]) == {old, new["kid"]}

    assert run("keys", "activate", new["kid"], "--json")[0] == 0
    code, _, err = run("keys", "retire", old)
    assert code == 1 and "may still be in use" in err  # tokens it signed have not expired yet
    code, _, err = run("keys", "retire", new["kid"])
    assert code == 1 and "signing now" in err
    code, listed, _ = run("keys", "list", "--json")
    assert {k["kid"]: k["state"] for k in listed if k["purpose"] == "registry"} == {
        old: "trusted",
        new["kid"]: "signing",
    }


def test_license_keys_rotate_at_once(run) -> None:
    code, key, _ = run("keys", "rotate", "--purpose", "license", "--json")
    assert code == 0 and key["state"] == "signing" and key["alg"] == "EdDSA"
    code, text, _ = run("keys", "list")
    assert code == 0 and key["kid"] in text
