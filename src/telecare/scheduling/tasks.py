"""Clock-driven jobs: appointment reminders and no-show marking. `run_due(db)` runs both, each in its own
unit of work and claimed so that one worker runs each round (core/jobs.py). The app runs it every
`visits_background_interval_seconds`; `telecare visits-tick` runs it from cron or a loop of its own."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.service import audit_key
from telecare.audit import service as audit
from telecare.audit.models import AuditAction
from telecare.core import jobs
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Patient
from telecare.scheduling import mail
from telecare.scheduling.availability import get_policy
from telecare.scheduling.models import Appointment, AppointmentReminder, AppointmentStatus
from telecare.scheduling.service import org_timezone, publish_visit_change

log = logging.getLogger(__name__)
MAX_OFFSET = timedelta(days=14)  # PolicyUpdate caps reminder offsets at 14 days


@dataclass
class TickReport:
    reminders_sent: int = 0
    noshows: int = 0
    skipped: bool = False  # another worker held a job of this tick


async def send_due_reminders(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Send each appointment's reminder whose offset has come. When several offsets are due at once (the
    task did not run for a while) only the nearest is sent; offsets that were already past when the visit
    was booked are skipped (the booking confirmation covered them)."""
    now = now or utc_now()
    rows = (
        await session.execute(
            select(Appointment, Patient)
            .join(Patient, Patient.id == Appointment.patient_id)
            .where(
                Appointment.status.in_((AppointmentStatus.BOOKED, AppointmentStatus.CHECKED_IN)),
                Appointment.start_at > now,
                Appointment.start_at <= now + MAX_OFFSET,
            )
        )
    ).all()
    sent = 0
    for appt, patient in rows:
        policy = await get_policy(session, appt.org_id)
        done = set(
            (
                await session.execute(
                    select(AppointmentReminder.offset_minutes).where(
                        AppointmentReminder.appointment_id == appt.id
                    )
                )
            ).scalars()
        )
        due = [
            o
            for o in policy.reminder_offsets_minutes
            if o not in done and appt.start_at - timedelta(minutes=o) <= now
        ]
        if not due:
            continue
        nearest = min(due)
        for offset in due:
            session.add(AppointmentReminder(appointment_id=appt.id, offset_minutes=offset, queued_at=now))
        try:
            async with session.begin_nested():
                await session.flush()
                # Queuing a reminder is a use of the patient's appointment (and contact details, to mail it).
                await audit.record(
                    session,
                    audit.SYSTEM_ACTOR,
                    action=AuditAction.CREATE,
                    resource_type="AppointmentReminder",
                    resource_id=appt.id,
                    patient_id=appt.patient_id,
                    org_id=appt.org_id,
                    detail={"offsets_minutes": sorted(due)},
                )
        except IntegrityError:
            continue  # another worker took it
        if appt.created_at > appt.start_at - timedelta(minutes=nearest) or not patient.email:
            continue
        await mail.send_visit_mail(
            session,
            appt,
            patient,
            kind="visit_reminder",
            tz=await org_timezone(session, appt.org_id),
            checkin_opens_minutes=policy.checkin_opens_minutes,
            now=now,
        )
        sent += 1
    return sent


async def mark_noshows(session: AsyncSession, *, now: datetime | None = None) -> int:
    """A visit whose patient never joined (still booked or only checked in) by the organization's grace
    period after the start becomes `noshow`. Visits blocked by the licensure gate are not the patient's
    doing and stay flagged for the coordinator instead."""
    from telecare.visits.models import VisitEvent, VisitEventKind

    now = now or utc_now()
    rows = (
        await session.execute(
            select(Appointment)
            .where(
                Appointment.status.in_((AppointmentStatus.BOOKED, AppointmentStatus.CHECKED_IN)),
                Appointment.start_at <= now,
                Appointment.licensure_blocked_at.is_(None),
            )
            .with_for_update(skip_locked=True)
        )
    ).scalars()
    marked = 0
    key = audit_key(session)
    for appt in list(rows):
        policy = await get_policy(session, appt.org_id)
        if now < appt.start_at + timedelta(minutes=policy.noshow_grace_minutes):
            continue
        appt.status = AppointmentStatus.NOSHOW
        appt.noshow_at = now
        session.add(
            VisitEvent(
                appointment_id=appt.id,
                kind=VisitEventKind.NOSHOW,
                at=now,
                detail={"grace_minutes": policy.noshow_grace_minutes},
            )
        )
        await audit.record(
            session,
            audit.SYSTEM_ACTOR,
            key=key,
            action=AuditAction.UPDATE,
            resource_type="Appointment",
            resource_id=appt.id,
            patient_id=appt.patient_id,
            org_id=appt.org_id,
            detail={"status": "noshow"},
        )
        publish_visit_change(session, appt, "noshow")
        marked += 1
    await session.flush()
    return marked


async def run_due(db: Database, *, now: datetime | None = None) -> TickReport:
    report = TickReport()
    async with db.unit_of_work() as session:
        if await jobs.claim(session, "visits.noshows"):
            report.noshows = await mark_noshows(session, now=now)
        else:
            report.skipped = True
    async with db.unit_of_work() as session:
        if await jobs.claim(session, "visits.reminders"):
            report.reminders_sent = await send_due_reminders(session, now=now)
        else:
            report.skipped = True
    return report


async def background_loop(app: Any) -> None:
    """Started by the app lifespan: one tick every `visits_background_interval_seconds` (0 disables)."""
    interval = app.state.settings.visits_background_interval_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await run_due(app.state.db)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("visits tick failed")
