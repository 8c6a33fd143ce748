"""Population queries for monitoring, each starting from the principal's patient scope."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.time import utc_now
from telecare.identity.models import Patient
from telecare.monitoring import alerts as engine
from telecare.monitoring.models import Alert, Reading, RpmEnrolment


@dataclass
class WorklistAlert:
    id: int
    patient_id: int
    patient_name: str
    mrn: str
    rule_code: str
    tier: str
    status: str
    title: str
    detail: str
    created_at: datetime
    deadline_at: datetime | None
    escalated_at: datetime | None
    reading_count: int
    programs: list[str]

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


@dataclass
class MissingData:
    patient_id: int
    patient_name: str
    mrn: str
    last_reading_at: datetime | None
    days_without_data: int | None
    programs: list[str]

    def as_json(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in self.__dict__.items()}


@dataclass
class Worklist:
    alerts: list[WorklistAlert] = field(default_factory=list)
    missing: list[MissingData] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "alerts": [a.as_json() for a in self.alerts],
            "missing_data": [m.as_json() for m in self.missing],
        }


def _name(p: Patient) -> str:
    return f"{p.family_name}, {p.given_name}"


async def worklist(
    session: AsyncSession,
    principal: Principal,
    *,
    program: str | None = None,
    missing_days: int | None = None,
) -> Worklist:
    """Open alerts of reachable patients (immediate first, then oldest first), then enrolled patients without
    readings for the missing-data period. Audited as a search over the patients shown."""
    scope = access.patient_scope(principal, Resource.RPM_ALERT, Action.SEARCH).scalar_subquery()
    enrolments = await session.execute(
        select(RpmEnrolment.patient_id, RpmEnrolment.programs).where(
            RpmEnrolment.ended_on.is_(None), RpmEnrolment.patient_id.in_(scope)
        )
    )
    programs: dict[int, list[str]] = {pid: list(p or []) for pid, p in enrolments.all()}
    rows = await session.execute(
        select(Alert, Patient)
        .join(Patient, Patient.id == Alert.patient_id)
        .where(Alert.patient_id.in_(scope), engine.not_resolved())
        .order_by(engine.tier_order(), Alert.created_at, Alert.id)
    )
    out = Worklist()
    for alert, patient in rows.all():
        progs = programs.get(patient.id, [])
        if program and program not in progs:
            continue
        out.alerts.append(
            WorklistAlert(
                alert.id,
                patient.id,
                _name(patient),
                patient.mrn,
                alert.rule_code,
                str(alert.tier),
                str(alert.status),
                alert.title,
                alert.detail,
                alert.created_at,
                alert.deadline_at,
                alert.escalated_at,
                alert.reading_count,
                progs,
            )
        )
    db_settings = as_uow(session).settings
    days = missing_days or db_settings.rpm_missing_data_days
    cutoff = utc_now() - timedelta(days=days)
    enrolled = [pid for pid, progs in programs.items() if not program or program in progs]
    with_alerts = {a.patient_id for a in out.alerts}
    if enrolled:
        last = await session.execute(
            select(Patient, func.max(Reading.measured_at))
            .outerjoin(Reading, Reading.patient_id == Patient.id)
            .where(Patient.id.in_(enrolled))
            .group_by(Patient.id)
        )
        now = utc_now()
        for patient, last_at in last.all():
            if patient.id in with_alerts:
                continue
            if last_at is None or last_at < cutoff:
                out.missing.append(
                    MissingData(
                        patient.id,
                        _name(patient),
                        patient.mrn,
                        last_at,
                        (now - last_at).days if last_at else None,
                        programs.get(patient.id, []),
                    )
                )
        out.missing.sort(key=lambda m: (m.last_reading_at is not None, m.last_reading_at or now))
    shown = sorted({a.patient_id for a in out.alerts} | {m.patient_id for m in out.missing})
    await access.record_search(
        session, principal, resource=Resource.RPM_ALERT, patient_ids=shown, query={"program": program}
    )
    return out
