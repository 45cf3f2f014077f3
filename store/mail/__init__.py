"""Outgoing e-mail: an outbox written in the transaction of the event that causes a message,
delivered afterwards by a sender (SMTP, or ``.eml`` files in the data directory)."""
