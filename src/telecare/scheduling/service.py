"""Appointments: booking (on slots from `availability.py`),
rescheduling and cancelling within the organization's notice period, the coordinators' calendar, reminders
and no-shows (the last two are clock-driven, see `tasks.py`).

Double booking is prevented three ways: the practitioner row is locked (SELECT ... FOR UPDATE on PostgreSQL;
SQLite transactions are BEGIN IMMEDIATE, so writers are serialised), the overlap check runs under that lock,
and a partial unique index refuses two active appointments starting at the same instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.access.service import (
    open_patient,
    patient_scope,
    record_access,
    record_denial,
    record_search,
)
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import FieldError, Forbidden, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Organization, Patient, Practitioner, User
from telecare.licensure import service as licensure
from telecare.scheduling import mail
from telecare.scheduling.availability import (
    MAX_SEARCH_DAYS,
    OfferedSlot,
    SlotSearch,
    Unlicensed,
    _free_slots,
    _practitioner,
    _visit_type,
    get_policy,
)
from telecare.scheduling.errors import (
    AppointmentNotChangeable,
    AppointmentNotFound,
    NoticePeriodPassed,
    PractitionerNotFound,
    SlotUnavailable,
    VisitTypeNotFound,
)
from telecare.scheduling.models import (
    ACTIVE_STATUSES,
    Appointment,
    AppointmentStatus,
    Modality,
    SchedulingPolicy,
    VisitType,
)

__all__ = [
    "MAX_SEARCH_DAYS",
    "AppointmentNotChangeable",
    "AppointmentNotFound",
    "NoticePeriodPassed",
    "OfferedSlot",
    "PractitionerNotFound",
    "SlotSearch",
    "SlotUnavailable",
    "Unlicensed",
    "VisitTypeNotFound",
]


# ---- appointments ------------------------------------------------------------------------------------


async def load_appointment(
    session: AsyncSession,
    principal: Principal,
    appointment_id: int,
    *,
    resource: Resource = Resource.APPOINTMENT,
    action: Action = Action.READ,
    lock: bool = False,
    audit_access: bool = True,
) -> Appointment:
    """Authorise and audit access to one appointment (or its visit, notes...). 404 outside reach."""
    try:
        scope = patient_scope(principal, resource, action)
    except Forbidden:
        record_denial(
            session, principal, resource=resource, action=action, patient_id=None, resource_id=appointment_id
        )
        raise
    stmt = select(Appointment).where(
        Appointment.id == appointment_id,
        Appointment.org_id == principal.org_id,
        Appointment.patient_id.in_(scope.scalar_subquery()),
    )
    if lock:
        stmt = stmt.with_for_update()
    appt = (await session.execute(stmt)).scalar_one_or_none()
    if appt is None:
        record_denial(
            session, principal, resource=resource, action=action, patient_id=None, resource_id=appointment_id
        )
        raise AppointmentNotFound()
    if audit_access:
        await record_access(
            session,
            principal,
            resource=resource,
            action=action,
            patient_id=appt.patient_id,
            resource_id=appt.id,
        )
    return appt


def _patient_for_booking(principal: Principal, patient_id: int | None) -> int:
    if rules.is_patient(principal):
        if principal.patient_id is None:
            raise Forbidden("This login has no patient record.")
        # Another patient's id goes to `open_patient`, which answers 404 (outside reach, audited) like an
        # unknown id: a 403 here would confirm that the patient exists.
        return principal.patient_id if patient_id is None else patient_id
    if patient_id is None:
        raise ValidationFailed(errors=[FieldError("patient_id", "Required when booking for a patient.")])
    return patient_id


async def _place(
    session: AsyncSession,
    principal: Principal,
    *,
    patient: Patient,
    practitioner_id: int,
    vt: VisitType,
    start_at: datetime,
    modality: Modality,
    expected_state: str,
    ignore_appointment_id: int | None = None,
) -> Appointment:
    """Checks and insert shared by booking and rescheduling. Locks the practitioner row first."""
    start_at = start_at.astimezone(UTC)
    if str(modality) not in vt.modalities:
        raise ValidationFailed(
            errors=[FieldError("modality", f"This visit type is offered as: {', '.join(vt.modalities)}.")]
        )
    prac = await _practitioner(session, principal.org_id, practitioner_id, lock=True)
    policy = await get_policy(session, principal.org_id)
    now = utc_now()
    tz = ZoneInfo(prac.timezone)
    local_day = start_at.astimezone(tz).date()
    free = await _free_slots(
        session,
        prac,
        first_day=local_day,
        last_day=local_day,
        duration=timedelta(minutes=vt.duration_minutes),
        policy=policy,
        now=now,
        ignore_appointment_id=ignore_appointment_id,
    )
    if not any(slot.start == start_at for slot in free):
        raise SlotUnavailable(
            "The practitioner is not free at that time (taken, blocked, outside availability or too soon)."
        )
    await licensure.require_licensed(session, practitioner_id=prac.id, state=expected_state, on=local_day)
    appt = Appointment(
        org_id=principal.org_id,
        patient_id=patient.id,
        practitioner_id=prac.id,
        visit_type_id=vt.id,
        start_at=start_at,
        end_at=start_at + timedelta(minutes=vt.duration_minutes),
        modality=modality,
        booked_modality=modality,
        status=AppointmentStatus.BOOKED,
        expected_state=expected_state,
        booked_by_user_id=principal.user_id,
    )
    session.add(appt)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise SlotUnavailable("The practitioner was booked at that time a moment ago.") from exc
    return appt


async def book_appointment(
    session: AsyncSession,
    principal: Principal,
    *,
    practitioner_id: int,
    visit_type_id: int,
    start_at: datetime,
    modality: Modality,
    expected_state: str,
    patient_id: int | None = None,
) -> Appointment:
    """Book a visit: a patient for themselves, a coordinator on a patient's behalf."""
    pid = _patient_for_booking(principal, patient_id)
    patient = await open_patient(session, principal, pid, resource=Resource.APPOINTMENT, action=Action.CREATE)
    vt = await _visit_type(session, principal.org_id, visit_type_id)
    appt = await _place(
        session,
        principal,
        patient=patient,
        practitioner_id=practitioner_id,
        vt=vt,
        start_at=start_at,
        modality=modality,
        expected_state=expected_state.upper(),
    )
    await record_access(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        action=Action.CREATE,
        patient_id=patient.id,
        resource_id=appt.id,
        detail={"practitioner_id": appt.practitioner_id, "start_at": appt.start_at.isoformat()},
    )
    await _confirm_by_mail(session, appt, patient, kind="visit_booked")
    _publish(session, appt, "booked")
    return appt


def visit_date(start_at: datetime, practitioner: Practitioner) -> date:
    """The date of the visit for licence validity: the local date where the visit is scheduled (the
    practitioner's zone), not the UTC date, so an evening visit is not checked against tomorrow."""
    return start_at.astimezone(ZoneInfo(practitioner.timezone)).date()


def _inside_notice(appt: Appointment, policy: SchedulingPolicy, now: datetime) -> bool:
    return now > appt.start_at - timedelta(hours=policy.cancel_notice_hours)


async def reschedule_appointment(
    session: AsyncSession,
    principal: Principal,
    *,
    appointment_id: int,
    start_at: datetime,
    practitioner_id: int | None = None,
) -> Appointment:
    """Move a booked visit: the old appointment is cancelled (linked), a new one booked. Patients may not
    reschedule inside the notice period; coordinators may."""
    appt = await load_appointment(
        session, principal, appointment_id, action=Action.UPDATE, lock=True, audit_access=False
    )
    if appt.status != AppointmentStatus.BOOKED:
        raise AppointmentNotChangeable()
    policy = await get_policy(session, principal.org_id)
    now = utc_now()
    if rules.is_patient(principal) and _inside_notice(appt, policy, now):
        raise NoticePeriodPassed(
            f"Changes online are possible up to {policy.cancel_notice_hours} hours before the visit."
        )
    patient = await open_patient(
        session,
        principal,
        appt.patient_id,
        resource=Resource.APPOINTMENT,
        action=Action.UPDATE,
        resource_id=appt.id,
    )
    vt = await _visit_type(session, principal.org_id, appt.visit_type_id)
    appt.status = AppointmentStatus.CANCELLED
    appt.cancelled_at = now
    appt.cancelled_by_user_id = principal.user_id
    appt.cancel_reason = "rescheduled"
    await session.flush()
    new = await _place(
        session,
        principal,
        patient=patient,
        practitioner_id=practitioner_id or appt.practitioner_id,
        vt=vt,
        start_at=start_at,
        modality=appt.booked_modality,
        expected_state=appt.expected_state,
    )
    new.rescheduled_from_id = appt.id
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        action=Action.UPDATE,
        patient_id=patient.id,
        resource_id=new.id,
        detail={"rescheduled_from": appt.id, "start_at": new.start_at.isoformat()},
    )
    await _confirm_by_mail(session, new, patient, kind="visit_rescheduled")
    _publish(session, appt, "cancelled")
    _publish(session, new, "booked")
    return new


async def cancel_appointment(
    session: AsyncSession,
    principal: Principal,
    *,
    appointment_id: int,
    reason: str | None = None,
    patient_requested: bool = True,
) -> Appointment:
    """Cancel a visit that has not started. Inside the notice period a patient-requested cancellation is
    recorded as late (`late_cancel`)."""
    appt = await load_appointment(
        session, principal, appointment_id, action=Action.UPDATE, lock=True, audit_access=False
    )
    if appt.status not in (AppointmentStatus.BOOKED, AppointmentStatus.CHECKED_IN):
        raise AppointmentNotChangeable()
    policy = await get_policy(session, principal.org_id)
    now = utc_now()
    by_patient = rules.is_patient(principal) or patient_requested
    appt.status = AppointmentStatus.CANCELLED
    appt.cancelled_at = now
    appt.cancelled_by_user_id = principal.user_id
    appt.cancel_reason = reason
    appt.late_cancel = by_patient and _inside_notice(appt, policy, now)
    await session.flush()
    from telecare.visits.models import VisitEvent, VisitEventKind

    session.add(
        VisitEvent(
            appointment_id=appt.id,
            kind=VisitEventKind.CANCELLED,
            at=now,
            actor_user_id=principal.user_id,
            detail={"late": appt.late_cancel},
        )
    )
    await record_access(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        action=Action.UPDATE,
        patient_id=appt.patient_id,
        resource_id=appt.id,
        detail={"cancelled": True, "late": appt.late_cancel},
    )
    _publish(session, appt, "cancelled")
    return appt


async def reassign_practitioner(
    session: AsyncSession, principal: Principal, *, appointment_id: int, practitioner_id: int
) -> Appointment:
    """Coordinator: give a visit (typically one flagged by the licensure gate) to a licensed colleague at
    the same time. The gate runs against the attested state when the patient has checked in."""
    if not rules.assigns_visits(principal):
        raise Forbidden("Only coordinators re-assign visits.")
    appt = await load_appointment(session, principal, appointment_id, action=Action.UPDATE, lock=True)
    if appt.status not in (AppointmentStatus.BOOKED, AppointmentStatus.CHECKED_IN):
        raise AppointmentNotChangeable()
    from telecare.visits.models import CheckInAttestation

    attested = (
        await session.execute(select(CheckInAttestation).where(CheckInAttestation.appointment_id == appt.id))
    ).scalar_one_or_none()
    state = attested.state if attested is not None else appt.expected_state
    prac = await _practitioner(session, principal.org_id, practitioner_id, lock=True)
    on = visit_date(appt.start_at, prac)
    await licensure.require_licensed(session, practitioner_id=prac.id, state=state, on=on)
    clash = await session.scalar(
        select(
            exists().where(
                Appointment.practitioner_id == prac.id,
                Appointment.id != appt.id,
                Appointment.status.in_(ACTIVE_STATUSES),
                Appointment.start_at < appt.end_at,
                Appointment.end_at > appt.start_at,
            )
        )
    )
    if clash:
        raise SlotUnavailable("The colleague already has a visit at that time.")
    previous = appt.practitioner_id
    appt.practitioner_id = prac.id
    appt.licensure_blocked_at = None
    appt.licensure_block_state = None
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise SlotUnavailable("The colleague was booked at that time a moment ago.") from exc
    await record_access(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        action=Action.UPDATE,
        patient_id=appt.patient_id,
        resource_id=appt.id,
        detail={"reassigned_from": previous, "reassigned_to": prac.id},
    )
    _publish(session, appt, "reassigned")
    return appt


async def my_appointments(session: AsyncSession, principal: Principal) -> list[Appointment]:
    """The caller's own visits: a patient's, or a clinician's own schedule."""
    scope = patient_scope(principal, Resource.APPOINTMENT, Action.SEARCH)
    stmt = select(Appointment).where(
        Appointment.org_id == principal.org_id, Appointment.patient_id.in_(scope.scalar_subquery())
    )
    if rules.has_clinical_role(principal):
        stmt = stmt.where(Appointment.practitioner_id == (principal.practitioner_id or -1))
    elif not rules.is_patient(principal):
        raise Forbidden("Use the calendar.")
    rows = list((await session.execute(stmt.order_by(Appointment.start_at.desc()).limit(200))).scalars())
    await record_search(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        patient_ids=[a.patient_id for a in rows],
        query={"mine": True},
    )
    return rows


async def patient_appointments(
    session: AsyncSession, principal: Principal, *, patient_id: int, limit: int = 50
) -> list[Appointment]:
    """One patient's visits, newest first, for the chart (authorised and audited as a search)."""
    scope = patient_scope(principal, Resource.APPOINTMENT, Action.SEARCH)
    stmt = (
        select(Appointment)
        .where(
            Appointment.org_id == principal.org_id,
            Appointment.patient_id == patient_id,
            Appointment.patient_id.in_(scope.scalar_subquery()),
        )
        .order_by(Appointment.start_at.desc())
        .limit(limit)
    )
    rows = list((await session.execute(stmt)).scalars())
    await record_search(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        patient_ids=[a.patient_id for a in rows],
        query={"patient": True},
    )
    return rows


@dataclass(frozen=True)
class CalendarEntry:
    appointment: Appointment
    patient_name: str
    patient_mrn: str
    visit_type: str
    local_start: datetime
    local_end: datetime
    flagged: bool


@dataclass(frozen=True)
class PractitionerDay:
    practitioner_id: int
    name: str
    timezone: str
    entries: list[CalendarEntry]


async def day_calendar(
    session: AsyncSession, principal: Principal, *, day: date, practitioner_id: int | None = None
) -> list[PractitionerDay]:
    """The virtual-clinic calendar: each practitioner's visits on a local day (their own time zone)."""
    scope = patient_scope(principal, Resource.APPOINTMENT, Action.SEARCH)
    stmt = (
        select(Practitioner, User.display_name)
        .join(User, User.id == Practitioner.user_id)
        .where(Practitioner.org_id == principal.org_id)
        .order_by(User.display_name)
    )
    if practitioner_id is not None:
        stmt = stmt.where(Practitioner.id == practitioner_id)
    elif rules.has_clinical_role(principal):
        stmt = stmt.where(Practitioner.id == (principal.practitioner_id or -1))
    out: list[PractitionerDay] = []
    seen: list[int] = []
    for prac, name in (await session.execute(stmt)).all():
        tz = ZoneInfo(prac.timezone)
        start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
        rows = (
            await session.execute(
                select(Appointment, Patient.given_name, Patient.family_name, Patient.mrn, VisitType.name)
                .join(Patient, Patient.id == Appointment.patient_id)
                .join(VisitType, VisitType.id == Appointment.visit_type_id)
                .where(
                    Appointment.practitioner_id == prac.id,
                    Appointment.start_at >= start,
                    Appointment.start_at < end,
                    Appointment.patient_id.in_(scope.scalar_subquery()),
                )
                .order_by(Appointment.start_at)
            )
        ).all()
        entries = [
            CalendarEntry(
                appt,
                f"{given} {family}",
                mrn,
                vt_name,
                appt.start_at.astimezone(tz),
                appt.end_at.astimezone(tz),
                appt.licensure_blocked_at is not None,
            )
            for appt, given, family, mrn, vt_name in rows
        ]
        seen.extend(e.appointment.patient_id for e in entries)
        out.append(PractitionerDay(prac.id, name, prac.timezone, entries))
    await record_search(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        patient_ids=seen,
        query={"day": day.isoformat(), "practitioner_id": practitioner_id},
    )
    return out


async def flagged_for_reassignment(session: AsyncSession, principal: Principal) -> list[Appointment]:
    """Visits the licensure gate blocked at check-in, still to be given to a licensed colleague."""
    scope = patient_scope(principal, Resource.APPOINTMENT, Action.SEARCH)
    rows = list(
        (
            await session.execute(
                select(Appointment)
                .where(
                    Appointment.org_id == principal.org_id,
                    Appointment.licensure_blocked_at.is_not(None),
                    Appointment.status.in_(ACTIVE_STATUSES),
                    Appointment.patient_id.in_(scope.scalar_subquery()),
                )
                .order_by(Appointment.start_at)
            )
        ).scalars()
    )
    await record_search(
        session,
        principal,
        resource=Resource.APPOINTMENT,
        patient_ids=[a.patient_id for a in rows],
        query={"flagged": True},
    )
    return rows


async def reassignment_candidates(
    session: AsyncSession, principal: Principal
) -> list[tuple[Appointment, list[int]]]:
    """Each visit the licensure gate blocked, with the colleagues licensed for the patient's state on the
    visit's local date (the coordinator's re-assignment choices; `reassign_practitioner` re-checks)."""
    if not rules.assigns_visits(principal):
        raise Forbidden("Only coordinators re-assign visits.")
    flagged = await flagged_for_reassignment(session, principal)
    if not flagged:
        return []
    everyone = list(
        (await session.execute(select(Practitioner).where(Practitioner.org_id == principal.org_id))).scalars()
    )
    by_id = {p.id: p for p in everyone}
    out: list[tuple[Appointment, list[int]]] = []
    for appt in flagged:
        options = await licensure.licensed_practitioners(
            session,
            practitioner_ids=list(by_id),
            state=appt.licensure_block_state or appt.expected_state,
            on=visit_date(appt.start_at, by_id[appt.practitioner_id]),
        )
        out.append((appt, [pid for pid, r in options.items() if r.allowed and pid != appt.practitioner_id]))
    return out


async def visit_labels(session: AsyncSession, appointment_ids: list[int]) -> dict[int, dict[str, str]]:
    """Clinician and visit-type names of appointments the caller already holds (no clinical content)."""
    if not appointment_ids:
        return {}
    rows = await session.execute(
        select(Appointment.id, User.display_name, VisitType.name)
        .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
        .join(User, User.id == Practitioner.user_id)
        .join(VisitType, VisitType.id == Appointment.visit_type_id)
        .where(Appointment.id.in_(appointment_ids))
    )
    return {int(aid): {"clinician": str(name), "visit_type": str(vt)} for aid, name, vt in rows.all()}


async def practitioner_names(session: AsyncSession, principal: Principal) -> dict[int, str]:
    """Display names of the organization's practitioners (for schedules; no patient data)."""
    rows = await session.execute(
        select(Practitioner.id, User.display_name)
        .join(User, User.id == Practitioner.user_id)
        .where(Practitioner.org_id == principal.org_id)
    )
    return {int(pid): str(name) for pid, name in rows.all()}


# ---- mail and events (mail bodies and .ics in mail.py) ----------------------------------------------


async def org_timezone(session: AsyncSession, org_id: int) -> ZoneInfo:
    org = await session.get(Organization, org_id)
    return ZoneInfo(org.timezone if org is not None else "UTC")


async def _confirm_by_mail(session: AsyncSession, appt: Appointment, patient: Patient, *, kind: str) -> None:
    policy = await get_policy(session, appt.org_id)
    await mail.send_visit_mail(
        session,
        appt,
        patient,
        kind=kind,
        tz=await org_timezone(session, appt.org_id),
        checkin_opens_minutes=policy.checkin_opens_minutes,
    )


def _publish(session: AsyncSession, appt: Appointment, change: str) -> None:
    """Tell live screens (waiting room, calendar) after commit. Ids and status only: no health data."""
    publish_visit_change(session, appt, change)


def publish_visit_change(session: AsyncSession, appt: Appointment, change: str, **extra: Any) -> None:
    """Topics: `visit.<appointment id>` (both sides of one visit) and `visits.practitioner.<id>` (a
    clinician's queue). Delivered only after commit; a no-op outside a request (CLI, clock tasks without a
    bus)."""
    bus = as_uow(session).events
    if bus is None:
        return
    payload = {
        "appointment_id": appt.id,
        "practitioner_id": appt.practitioner_id,
        "status": str(appt.status),
        "modality": str(appt.modality),
        "change": change,
        **extra,
    }
    bus.publish(session, f"visit.{appt.id}", payload)
    bus.publish(session, f"visits.practitioner.{appt.practitioner_id}", payload)


async def completed_visit_times(
    session: AsyncSession,
    *,
    patient_id: int,
    start: datetime,
    end: datetime,
    practitioner_id: int | None = None,
) -> list[datetime]:
    """When the patient's completed visits started, between `start` and `end` (other domains' billing
    rules: online digital E/M's related-visit and established-patient checks). The caller has already
    authorised access to the patient."""
    rows = await session.execute(
        select(Appointment.start_at)
        .where(
            Appointment.patient_id == patient_id,
            Appointment.status == AppointmentStatus.COMPLETED,
            Appointment.start_at >= start,
            Appointment.start_at < end,
            *([Appointment.practitioner_id == practitioner_id] if practitioner_id is not None else []),
        )
        .order_by(Appointment.start_at)
    )
    return list(rows.scalars())
