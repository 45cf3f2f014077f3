"""Steps the browser tests share: signing up, logging in, paying on the test gateway."""

from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path

from playwright.sync_api import Locator, Page, expect

from tests.browser.support import PASSWORD


def flash(page: Page, text: str) -> Locator:
    """The flash message containing ``text`` (flashes are a polite live region)."""
    return page.locator(".flashes").get_by_text(text)


def sign_up(page: Page, username: str) -> None:
    page.goto("/")
    page.get_by_role("link", name="Sign up").click()
    expect(page).to_have_title(re.compile("Sign up"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("E-mail").fill(f"{username}@example.test")
    page.get_by_label("Display name").fill(username.title())
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Repeat the password").fill(PASSWORD)
    page.get_by_label(re.compile("I accept the Terms of service")).check()
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/my/content$"))
    expect(flash(page, "Welcome to the store")).to_be_visible()


def confirm_email(page: Page, data_dir: Path, username: str, timeout: float = 60) -> None:
    """Open the confirmation link the store mailed at sign-up (the embedded default writes
    each message as an .eml file under the data directory's mail/) and confirm."""
    address = f"{username}@example.test"
    link = re.compile(r"https?://\S+/verify-email/\S+")
    deadline = time.monotonic() + timeout
    while True:
        for path in sorted((data_dir / "mail").glob("*.eml")):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            body = message.get_body(preferencelist=("plain",))
            if address in str(message["To"] or "") and body is not None:
                found = link.search(body.get_content())
                if found:
                    page.goto(found.group(0))
                    page.get_by_role("button", name="Confirm").click()
                    expect(page.locator(".flashes")).to_contain_text("confirmed")
                    return
        assert time.monotonic() < deadline, f"no confirmation mail to {address}"
        time.sleep(0.25)


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Username or e-mail").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(flash(page, f"Logged in as {username}")).to_be_visible()


def pay(page: Page, card: str, button: str) -> None:
    """Fill the test gateway's card form (TEST MODE) and submit it."""
    expect(page.get_by_role("note")).to_contain_text("TEST MODE")
    page.get_by_label("Card number").fill(card)
    page.get_by_label("Expiry").fill("12/34")
    page.get_by_label("CVC").fill("123")
    page.get_by_role("button", name=button).click()
