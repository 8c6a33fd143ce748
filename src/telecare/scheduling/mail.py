"""What patients receive about a visit: confirmation and reminder mail with an .ics entry and the join
link. No health details: no visit type, no clinician name or specialty, only when and how."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.db import as_uow
from telecare.core.time import utc_now
from telecare.identity.models import Patient
from telecare.notifications import mailer
from telecare.notifications.service import notify
from telecare.scheduling.models import Appointment, Modality

SUBJECTS = {
    "visit_booked": ("Your telehealth appointment", "Your appointment is booked."),
    "visit_rescheduled": ("Your telehealth appointment", "Your appointment has moved."),
    "visit_reminder": ("Reminder: your telehealth appointment", "This is a reminder."),
}


def join_path(appointment_id: int) -> str:
    """The link patients follow to check in and join (reminders, confirmations, the portal)."""
    return f"/visits/{appointment_id}/check-in"


def ics_for(appt: Appointment, *, base_url: str, now: datetime) -> bytes:
    """An RFC 5545 calendar entry. No health details: no visit type, no clinician specialty."""

    def stamp(value: datetime) -> str:
        return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    link = base_url.rstrip("/") + join_path(appt.id)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Telecare//Visits//EN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:appointment-{appt.id}@telecare",
        f"DTSTAMP:{stamp(now)}",
        f"DTSTART:{stamp(appt.start_at)}",
        f"DTEND:{stamp(appt.end_at)}",
        "SUMMARY:Telehealth appointment",
        f"DESCRIPTION:Check in and join: {link}",
        f"URL:{link}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def mail_text(appt: Appointment, *, tz: ZoneInfo, checkin_opens_minutes: int, intro: str) -> str:
    local = appt.start_at.astimezone(tz)
    when = local.strftime("%A %d %B %Y at %H:%M ") + (local.tzname() or "")
    how = "by phone (audio only)" if appt.modality == Modality.AUDIO else "by video"
    return (
        f"{intro}\n\nYour telehealth appointment is on {when}, {how}.\n"
        f"Check-in opens {checkin_opens_minutes} minutes before the start. Use the link below to check in "
        "and join; you will be asked where you are at the time of the visit."
    )


async def send_visit_mail(
    session: AsyncSession,
    appt: Appointment,
    patient: Patient,
    *,
    kind: str,
    tz: ZoneInfo,
    checkin_opens_minutes: int,
    now: datetime | None = None,
) -> None:
    """In-app notification plus email (after commit) with the .ics attachment."""
    db = as_uow(session).db
    subject, intro = SUBJECTS[kind]
    await notify(
        session,
        org_id=appt.org_id,
        kind=kind,
        subject=subject,
        body=mail_text(appt, tz=tz, checkin_opens_minutes=checkin_opens_minutes, intro=intro),
        recipient_user_id=patient.user_id,
        recipient_email=patient.email,
        link=join_path(appt.id),
        attachments=[
            mailer.Attachment(
                "appointment.ics",
                ics_for(appt, base_url=db.settings.base_url, now=now or utc_now()),
                "text",
                "calendar",
            )
        ],
    )
