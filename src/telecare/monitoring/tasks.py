"""Clock-driven jobs: escalate alerts nobody acknowledged within their tier's deadline, and open
missing-data alerts. Run once from the CLI (`telecare monitoring run-tasks`) or in a loop in the app."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit import service as audit
from telecare.audit.models import AuditAction, Purpose
from telecare.core import jobs
from telecare.core.db import Database, as_uow
from telecare.core.time import utc_now
from telecare.identity.models import CareTeamMember, Practitioner, Role, User
from telecare.monitoring import alerts as engine
from telecare.monitoring.models import Alert, Reading, RpmEnrolment
from telecare.monitoring.rules import MISSING_DATA, RULES_BY_CODE
from telecare.notifications.service import notify

log = logging.getLogger(__name__)


@dataclass
class TaskReport:
    escalated: int = 0
    missing_opened: int = 0
    skipped: bool = False  # another worker held the sweep


async def patient_physician(session: AsyncSession, patient_id: int) -> User | None:
    """The patient's physician: a care-team physician, the one named primary first; else the ordering one."""
    rows = await session.execute(
        select(User, CareTeamMember.role)
        .join(Practitioner, Practitioner.user_id == User.id)
        .join(CareTeamMember, CareTeamMember.practitioner_id == Practitioner.id)
        .where(
            CareTeamMember.patient_id == patient_id,
            User.role == str(Role.PHYSICIAN),
            User.is_active.is_(True),
        )
        .order_by(CareTeamMember.id)
    )
    found = rows.all()
    for user, team_role in found:
        if "primary" in (team_role or ""):
            return user
    if found:
        return found[0][0]
    ordering = await session.execute(
        select(User)
        .join(Practitioner, Practitioner.user_id == User.id)
        .join(RpmEnrolment, RpmEnrolment.ordering_practitioner_id == Practitioner.id)
        .where(RpmEnrolment.patient_id == patient_id)
        .order_by(RpmEnrolment.id.desc())
    )
    return ordering.scalars().first()


async def escalate_overdue(session: AsyncSession) -> int:
    """Escalate each open alert past its deadline to the patient's physician, once, and notify them."""
    key = as_uow(session).audit_key
    now = utc_now()
    overdue = (
        (await session.execute(select(Alert).where(engine.overdue_filter(now)).order_by(Alert.id)))
        .scalars()
        .all()
    )
    for alert in overdue:
        physician = await patient_physician(session, alert.patient_id)
        alert.escalated_at = now
        alert.escalated_to_user_id = physician.id if physician else None
        if physician is not None:
            # No names or values in the notification: the link opens the patient's monitoring page.
            await notify(
                session,
                org_id=alert.org_id,
                kind="rpm_alert_escalation",
                subject=f"Escalated RPM alert #{alert.id} ({alert.tier})",
                body=f"RPM alert #{alert.id} was not acknowledged within its {alert.tier} deadline "
                "and is escalated to you.",
                recipient_user_id=physician.id,
                recipient_email=physician.email,
                link=f"/monitoring/patients/{alert.patient_id}",
            )
        await audit.record(
            session,
            audit.SYSTEM_ACTOR,
            key=key,
            action=AuditAction.UPDATE,
            resource_type="Flag",
            resource_id=alert.id,
            patient_id=alert.patient_id,
            org_id=alert.org_id,
            purpose=Purpose.TREATMENT,
            detail={"escalated_to_user_id": alert.escalated_to_user_id},
        )
        engine.publish_alert(session, alert, "escalated")
    return len(overdue)


async def open_missing_data(session: AsyncSession) -> int:
    """Open a missing-data alert for enrolled patients without readings for the rule's N days."""
    default_days = as_uow(session).settings.rpm_missing_data_days
    now = utc_now()
    enrolled = (
        await session.execute(
            select(
                RpmEnrolment.patient_id, RpmEnrolment.org_id, RpmEnrolment.programs, RpmEnrolment.created_at
            ).where(RpmEnrolment.ended_on.is_(None))
        )
    ).all()
    if not enrolled:
        return 0
    ids = [row[0] for row in enrolled]
    last = dict(
        (
            await session.execute(
                select(Reading.patient_id, func.max(Reading.measured_at))
                .where(Reading.patient_id.in_(ids))
                .group_by(Reading.patient_id)
            )
        ).all()
    )
    rules = await engine.load_patient_rules(session, ids)
    key = as_uow(session).audit_key
    opened = 0
    for patient_id, org_id, _programs, enrolled_at in enrolled:
        rule = rules[patient_id].rule(RULES_BY_CODE[MISSING_DATA], now)
        days = int(rule.params.get("days", default_days))
        if not rule.enabled:
            continue
        since = last.get(patient_id) or enrolled_at
        if now - since < timedelta(days=days):
            continue
        detail = f"no reading for {(now - since).days} days (rule: {days})"
        alert, created = await engine.open_alert(
            session, org_id=org_id, patient_id=patient_id, rule=rule, detail=detail, measured_at=None
        )
        if created:
            await audit.record(
                session,
                audit.SYSTEM_ACTOR,
                key=key,
                action=AuditAction.CREATE,
                resource_type="Flag",
                resource_id=alert.id,
                patient_id=patient_id,
                org_id=org_id,
                purpose=Purpose.TREATMENT,
                detail={"rule": MISSING_DATA, "days": days},
            )
            opened += 1
            engine.publish_alert(session, alert, "opened")
    return opened


async def run_due(db: Database) -> TaskReport:
    """One sweep in one unit of work; skipped (an empty report) while another worker runs it
    (core/jobs.py)."""
    async with db.unit_of_work() as session:
        report = TaskReport()
        if not await jobs.claim(session, "monitoring.sweep"):
            report.skipped = True
            return report
        report.escalated = await escalate_overdue(session)
        report.missing_opened = await open_missing_data(session)
        return report


async def background_loop(app: Any) -> None:
    """Started by the app lifespan; one sweep every `rpm_background_interval_seconds` (0 disables)."""
    interval = app.state.settings.rpm_background_interval_seconds
    try:
        if interval <= 0:
            await asyncio.Event().wait()  # no sweep; stay alive to stop the ingest coalescer on shutdown
        while True:
            await asyncio.sleep(interval)
            try:
                await run_due(app.state.db)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitoring sweep failed")
    finally:
        # Stop the ingest coalescer before the database goes (Database.dispose stops it too).
        for component in app.state.db.components():
            stop = getattr(component, "stop", None)
            if stop is not None:
                await stop()
