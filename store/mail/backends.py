"""Where messages go: an SMTP server, or ``.eml`` files in the data directory."""

from __future__ import annotations

import base64
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Protocol

from store.config import Settings
from store.mail.models import OutboxMessage

log = logging.getLogger("store.mail")


class DeliveryError(Exception):
    """A delivery attempt failed. ``permanent``: the server refused the message itself
    (retrying cannot help); otherwise it is tried again later."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Outgoing:
    """What a backend needs of an outbox row (detached from its session)."""

    id: str
    message_id: str
    to_addr: str
    subject: str
    text_body: str
    html_body: str
    headers: dict[str, str]
    attachments: list[dict[str, str]]
    created_at_rfc2822: str

    @classmethod
    def of(cls, row: OutboxMessage) -> Outgoing:
        return cls(
            id=str(row.id),
            message_id=row.message_id,
            to_addr=row.to_addr,
            subject=row.subject,
            text_body=row.text_body,
            html_body=row.html_body,
            headers=dict(row.headers or {}),
            attachments=list(row.attachments or []),
            created_at_rfc2822=format_datetime(row.created_at),
        )


def build_message(outgoing: Outgoing, *, sender: str) -> EmailMessage:
    """The MIME message: plain text always, HTML as its alternative, then attachments."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = outgoing.to_addr
    msg["Subject"] = outgoing.subject
    msg["Date"] = outgoing.created_at_rfc2822
    msg["Message-ID"] = outgoing.message_id
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in outgoing.headers.items():
        msg[name] = value
    msg.set_content(outgoing.text_body)
    if outgoing.html_body:
        msg.add_alternative(outgoing.html_body, subtype="html")
    for item in outgoing.attachments:
        maintype, _, subtype = item["content_type"].partition("/")
        msg.add_attachment(
            base64.b64decode(item["data"]),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=item["filename"],
        )
    return msg


class Backend(Protocol):
    def send(self, outgoing: Outgoing) -> None:
        """Deliver one message or raise :class:`DeliveryError`."""


class FileBackend:
    """Writes each message as ``<dir>/<message id>.eml`` (the embedded default: the store
    runs with no mail server and a developer reads what would have been sent)."""

    def __init__(self, directory: Path, *, sender: str) -> None:
        self.directory = directory
        self.sender = sender

    def send(self, outgoing: Outgoing) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{outgoing.id}.eml"
        tmp = path.with_suffix(".eml.tmp")
        data = build_message(outgoing, sender=self.sender).as_bytes()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise DeliveryError(f"cannot write {path}: {exc.strerror or exc}") from exc
        log.info(
            "mail written to %s",
            path,
            extra={"to": outgoing.to_addr, "subject": outgoing.subject},
        )


class SmtpBackend:
    """Delivers through an SMTP server: STARTTLS (587), implicit TLS (465) or plain."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str,
        username: str | None,
        password: str | None,
        timeout: float,
        sender: str,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.username = username
        self.password = password
        self.timeout = timeout
        self.sender = sender

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        if self.security == "starttls":
            client.starttls(context=context)
        return client

    def send(self, outgoing: Outgoing) -> None:
        msg = build_message(outgoing, sender=self.sender)
        try:
            client = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"cannot reach {self.host}:{self.port}: {exc}") from exc
        try:
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"recipient refused: {exc.recipients}", permanent=all(c >= 500 for c in codes)
            ) from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            raise DeliveryError(
                f"refused ({exc.smtp_code}): {exc.smtp_error!r}", permanent=exc.smtp_code >= 500
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"delivery to {self.host}:{self.port} failed: {exc}") from exc
        finally:
            try:
                client.quit()
            except (OSError, smtplib.SMTPException):
                client.close()


def backend_for(settings: Settings) -> Backend:
    """SMTP when ``STORE_MAIL_SMTP_HOST`` is set, else ``.eml`` files in the data directory."""
    sender = settings.resolved_mail_from
    if settings.mail_smtp_host:
        return SmtpBackend(
            host=settings.mail_smtp_host,
            port=settings.resolved_smtp_port,
            security=settings.mail_smtp_security,
            username=settings.mail_smtp_username,
            password=settings.mail_smtp_password,
            timeout=settings.mail_smtp_timeout,
            sender=sender,
        )
    return FileBackend(settings.mail_dir, sender=sender)
