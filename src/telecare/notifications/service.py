"""Notify users in the app and by email (after commit)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.db import after_commit, as_uow
from telecare.core.time import utc_now
from telecare.notifications import mailer
from telecare.notifications.models import Notification


async def notify(
    session: AsyncSession,
    *,
    org_id: int,
    kind: str,
    subject: str,
    body: str,
    recipient_user_id: int | None = None,
    recipient_email: str | None = None,
    link: str | None = None,
    attachments: list[mailer.Attachment] | None = None,
) -> Notification:
    """Store an in-app notification and, once committed, email it when an address is known."""
    note = Notification(
        org_id=org_id,
        kind=kind,
        subject=subject,
        body=body,
        link=link,
        recipient_user_id=recipient_user_id,
        recipient_email=recipient_email,
    )
    session.add(note)
    await session.flush()
    if recipient_email:
        db = as_uow(session).db
        note_id = note.id
        text = body + (f"\n\n{db.settings.base_url}{link}" if link else "")
        mail = mailer.Mail(to=recipient_email, subject=subject, text=text, attachments=attachments or [])

        async def deliver() -> None:
            if await mailer.send(db.settings, mail):
                async with db.unit_of_work() as s:
                    await s.execute(
                        update(Notification).where(Notification.id == note_id).values(emailed_at=utc_now())
                    )

        after_commit(session, deliver)
    return note
