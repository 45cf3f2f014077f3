"""Payments: orders, subscriptions, the payment gateway (Stripe or the built-in test gateway),
webhook intake with idempotency, refunds and sales reports. See docs/payments.md."""
