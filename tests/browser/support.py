"""What the browser tests share: where things are, the store under test, screenshots."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.browser import seed
from tests.e2e.registry_env import Process

CHROMIUM = os.environ.get("STORE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = Path(os.environ.get("STORE_TEST_OUTPUT", ROOT / "test-output"))
DEMO_PASSWORD = "demo-password-e2e"  # the demo accounts' password in this throw-away store
PASSWORD = "correct horse battery"  # accounts the tests sign up
REGISTRY_HOST = "127.0.0.1:5000"  # STORE_REGISTRY_URL of the server: docker commands name it


@dataclass(frozen=True)
class StoreServer:
    url: str
    data_dir: Path
    process: Process
    seeded: seed.Seeded

    def at(self, path: str) -> str:
        return f"{self.url}{path}"


def output_dir(item: pytest.Item) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.name)
    return OUTPUT / name


class Shots:
    """Screenshots of this test's pages: ``shot("name")`` when STORE_SCREENSHOTS=1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.enabled = os.environ.get("STORE_SCREENSHOTS", "") not in ("", "0")
        self.pages: list[Page] = []

    def save(self, page: Page, name: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def __call__(self, page: Page, name: str) -> None:
        if self.enabled:
            self.save(page, name)


# axe-core from the npm registry, installed by scripts/test (never fetched by the tests):
#   npm install --no-save --prefix .cache/node axe-core@4
AXE_JS = Path(os.environ.get("STORE_AXE_JS", ROOT / ".cache/node/node_modules/axe-core/axe.min.js"))
