"""Every sentence the store's e-mails say, by locale, in one place.

Templates (``templates/email/``) give the layout and call ``t("key", **values)``; a message
is rendered in the recipient's locale, falling back to English for a missing key.
"""

from __future__ import annotations

DEFAULT_LOCALE = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "greeting": "Hello {name},",
        "signature": "— {site}",
        "footer.transactional": "You receive this message because of your account at {site}.",
        "footer.notice": "You receive this notice because of your settings at {site}.",
        "footer.unsubscribe": "Stop these notices",
        "footer.preferences": "Notification settings",
        # store mail test
        "test.subject": "Test message from {site}",
        "test.body": (
            "This is a test message sent with `store mail test`. If you can read it, "
            "the store's mail delivery works."
        ),
        # account links
        "verify_email.subject": "Confirm your e-mail address at {site}",
        "verify_email.body": (
            "Please confirm that this is your e-mail address by opening this link "
            "(it works once, for three days):"
        ),
        "verify_email.ignore": "If you did not sign up, ignore this message.",
        "password_reset.subject": "Reset your password at {site}",
        "password_reset.body": (
            "Someone (hopefully you) asked to reset the password of your account {username}. "
            "Open this link to choose a new one (it works once, for {minutes} minutes):"
        ),
        "password_reset.ignore": (
            "If you did not ask for this, ignore this message: your password stays as it is."
        ),
        "password_changed.subject": "Your password at {site} was changed",
        "password_changed.body": (
            "The password of your account {username} was just changed, and every session "
            "was logged out. If this was not you, reset your password at once: {reset_url}"
        ),
        "two_factor_off.subject": "Two-factor sign-in at {site} was turned off",
        "two_factor_off.body": (
            "Two-factor sign-in of your account {username} was just turned off, and every "
            "other session was logged out: your password alone logs in now. If this was not "
            "you, reset your password at once and turn two-factor sign-in on again: {reset_url}"
        ),
        "email_change.subject": "Confirm your new e-mail address at {site}",
        "email_change.body": (
            "You asked to use {new_email} for your account {username}. Open this link to "
            "confirm it (it works once, for a day); until then your address stays as it is."
        ),
        "email_change.link": "Confirm your new address",
        "email_change_requested.subject": "A change of your e-mail address at {site}",
        "email_change_requested.body": (
            "Someone (hopefully you) asked to change the address of your account {username} "
            "to {new_email}. Nothing changes unless the link sent there is opened. If this "
            "was not you, change your password at once."
        ),
        "email_change_requested.link": "Reset your password",
        "email_changed.subject": "Your e-mail address at {site} was changed",
        "email_changed.body": (
            "The address of your account {username} is now {new_email}; messages no longer "
            "come here. If this was not you, reset your password at once."
        ),
        "email_changed.link": "Reset your password",
        "account_deleted.subject": "Your account at {site} is deleted",
        "account_deleted.body": (
            "Your account was deleted as you asked: your personal data is erased, your "
            "sessions and tokens have ended. Receipts of past payments are kept for "
            "accounting, without your name or address. This is the last message we send."
        ),
        # money
        "receipt.subject": "Receipt {number} for {product}",
        "receipt.body": "Thank you: we received your payment of {amount} for {product}.",
        "receipt.link": "Your receipt",
        "payment_failed.subject": "Your payment for {product} failed",
        "payment_failed.body": (
            "We could not take your payment of {amount} for {product} ({reason}). Your "
            "access continues for a few days while you update your card."
        ),
        "payment_failed.link": "Update your card",
        "refund.subject": "Refund of {amount} for {product}",
        "refund.body": (
            "We refunded {amount} of your payment for {product} (receipt {number}). It "
            "reaches your card within a few days."
        ),
        "refund.link": "Your receipt",
        # subscriptions
        "subscription_renewed.subject": "Your subscription to {product} is renewed",
        "subscription_renewed.body": (
            "Your subscription to {product} is renewed until {until}; we charged {amount}."
        ),
        "subscription_renewed.link": "Your purchases",
        "plan_changed.subject": "Your plan for {product} is now {tier}",
        "plan_changed.body": (
            "Your subscription to {product} changed from {old_tier} to {tier} on {date}. "
            "{money} It renews on {until} at {renewal}."
        ),
        "plan_changed.link": "Your subscription",
        "subscription_canceled.subject": "Your subscription to {product} is canceled",
        "subscription_canceled.body": (
            "Your subscription to {product} is canceled: nothing more is charged, and your "
            "access ends on {until}."
        ),
        "subscription_canceled.link": "Your purchases",
        "trial_ending.subject": "Your trial of {product} ends on {date}",
        "trial_ending.body": (
            "Your free trial of {product} ends on {date}. Then we charge {amount} for the "
            "first period, unless you cancel before."
        ),
        "trial_ending.link": "Manage your subscription",
        "grace_ending.subject": "Your access to {product} stops on {date}",
        "grace_ending.body": (
            "We still could not take your payment for {product}. Your access continues "
            "until {date}; update your card before then to keep it."
        ),
        "grace_ending.link": "Update your card",
        "access_suspended.subject": "Your access to {product} is suspended",
        "access_suspended.body": (
            "The grace period after your failed payment for {product} is over, so your "
            "access is suspended. It comes back as soon as the payment goes through."
        ),
        "access_suspended.link": "Update your card",
        # licenses
        "license_issued.subject": "Your license for {product}",
        "license_issued.body": (
            "Your license for {product} ({tier}, valid until {until}) is attached as a .lic "
            "file; it is also in your content page."
        ),
        "license_issued.link": "Your content",
        # publishers and organizations
        "new_sale.subject": "New sale: {product}",
        "new_sale.body": "{product} ({tier}) was just bought for {amount}.",
        "new_sale.link": "Orders",
        "sales_digest.subject": "Sales of {organization} on {day}: {count}",
        "sales_digest.body": ("{organization} made {count} sales on {day} (UTC), {total} in all:"),
        "sales_digest.link": "Orders",
        "sales_digest.settings": (
            "You receive one digest a day instead of a mail per sale; change this in your "
            "notification settings."
        ),
        "certification_decided.subject": "Certification of {product} {tag}: {decision}",
        "certification_decided.body": (
            "The certification request for {product} {tag} was {decision}."
        ),
        "certification_decided.link": "Your products",
        "publisher_verified.subject": "{organization} is a verified publisher",
        "publisher_verified.body": (
            "An administrator verified {organization}: its products now show the verified "
            "publisher badge."
        ),
        "publisher_verified.link": "Your organization",
        "publisher_unverified.subject": "{organization} is no longer a verified publisher",
        "publisher_unverified.body": (
            "An administrator took back the verification of {organization}."
        ),
        "publisher_unverified.link": "Your organization",
        "review.note": "Note from the reviewer",
        "invitation.subject": "{inviter} invites you to {organization}",
        "invitation.body": (
            "{inviter} invites you to join {organization} ({slug}) as {role}. Accept or "
            "decline the invitation on your content page."
        ),
        "invitation.link": "Answer the invitation",
    }
}

# Notice categories a user may turn off; everything else is transactional (always sent).
NOTICE_CATEGORIES: dict[str, str] = {
    "sales": "New sales of your products",
    "reviews": "Certification and publisher verification decisions",
    "renewals": "Subscription renewals and reminders",
}


def t(key: str, locale: str = DEFAULT_LOCALE, /, **values: object) -> str:
    """The string ``key`` in ``locale`` with ``values`` filled in."""
    table = STRINGS.get(locale) or STRINGS[DEFAULT_LOCALE]
    template = table.get(key) or STRINGS[DEFAULT_LOCALE][key]
    return template.format(**values) if values else template
