"""SMTP delivery (the adapter boundary for mail). Sends only after the unit of work has committed."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

from telecare.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str
    subtype: str


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    attachments: list[Attachment] = field(default_factory=list)


def build_message(settings: Settings, mail: Mail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = mail.to
    msg["Subject"] = mail.subject
    msg.set_content(mail.text)
    for att in mail.attachments:
        msg.add_attachment(att.content, maintype=att.maintype, subtype=att.subtype, filename=att.filename)
    return msg


def _send_sync(settings: Settings, mail: Mail) -> None:
    assert settings.smtp_host is not None
    msg = build_message(settings, mail)
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_tls:
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, context=context, timeout=15)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=15)
    with smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=context)
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(msg)


async def send(settings: Settings, mail: Mail) -> bool:
    """Send one message; returns False (and logs without the address) when SMTP is not configured or fails."""
    if not settings.smtp_host:
        return False
    try:
        await asyncio.to_thread(_send_sync, settings, mail)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("mail delivery failed: %s", type(exc).__name__)
        return False
    return True
