"""Two-factor sign-in in a real browser: set it up from the QR page, keep the recovery
codes, log out, log in with the password and then a code from the authenticator."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pyotp
import pytest
from playwright.sync_api import Page, expect

from tests.browser.flows import flash, sign_up
from tests.browser.support import PASSWORD, Shots, StoreServer

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USERNAME = "tessa-2fa"


def _code(secret: str, ahead: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(datetime.now(UTC)) + ahead)


def test_two_factor_enrolment_and_log_in(
    page: Page, store_server: StoreServer, shots: Shots
) -> None:
    sign_up(page, USERNAME)
    page.goto("/my/account")
    page.get_by_role("link", name=re.compile("Off: manage")).click()
    expect(page).to_have_url(re.compile(r"/my/two-factor$"))
    page.get_by_role("button", name="Set up two-factor sign-in").click()

    # The QR code (inline SVG) and the key for typing in.
    qr = page.locator("figure.qr svg")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] > 100
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    shots(page, "qr")

    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("Code from the app").fill("000000")
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_text("That code is not valid")).to_be_visible()
    page.get_by_label("Code from the app").fill(_code(secret))
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("heading", name="Recovery codes")).to_be_visible()
    codes = page.locator("#recovery-codes li")
    expect(codes).to_have_count(10)
    shots(page, "recovery-codes")
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_text("Two-factor sign-in is on")).to_be_visible()

    # Log out, then the password alone leads to the code step.
    page.locator("summary", has_text=USERNAME).click()
    page.get_by_role("button", name="Log out").click()
    page.goto("/login")
    page.get_by_label("Username or e-mail").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/login/two-factor$"))
    page.goto("/my/content")
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto("/login/two-factor")
    page.get_by_label("Code").fill(_code(secret, ahead=1))
    page.get_by_role("button", name="Log in").click()
    expect(flash(page, f"Logged in as {USERNAME}")).to_be_visible()
    page.goto("/my/two-factor")
    expect(page.get_by_text("Unused recovery codes: 10")).to_be_visible()
