"""Scheduling rules: visit types, availability, slot search limited to licensed practitioners, booking,
rescheduling and cancelling within the organization's notice period, the coordinators' calendar, reminders
and no-shows (the last two are clock-driven, see `tasks.py`).

Double booking is prevented three ways: the practitioner row is locked (SELECT ... FOR UPDATE on PostgreSQL;
SQLite transactions are BEGIN IMMEDIATE, so writers are serialised), the overlap check runs under that lock,
and a partial unique index refuses two active appointments starting at the same instant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Reach, Resource
from telecare.access.service import (
    open_patient,
    patient_scope,
    reach_for,
    record_access,
    record_denial,
    record_search,
)
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Organization, Patient, Practitioner, Role, User
from telecare.licensure import service as licensure
from telecare.scheduling import (
    mail,
    repository,  # noqa: F401 - registers the visit care relationship
)
from telecare.scheduling.models import (
    ACTIVE_STATUSES,
    POLICY_DEFAULTS,
    Appointment,
    AppointmentStatus,
    AvailabilityException,
    AvailabilityTemplate,
    Modality,
    SchedulingPolicy,
    VisitType,
)
from telecare.scheduling.schemas import (
    ExceptionCreate,
    PolicyUpdate,
    TemplateCreate,
    VisitTypeCreate,
)
from telecare.scheduling.slots import DayException, Interval, WeeklyBlock, generate_slots

MAX_SEARCH_DAYS = 31


class VisitTypeNotFound(NotFound):
    """No active visit type with that id in the caller's organization."""

    code = "visit_type_not_found"
    title = "Visit type not found"


class PractitionerNotFound(NotFound):
    """No practitioner with that id in the caller's organization."""

    code = "practitioner_not_found"
    title = "Practitioner not found"


class AppointmentNotFound(NotFound):
    """The appointment does not exist or is outside the caller's reach."""

    code = "appointment_not_found"
    title = "Appointment not found"


class SlotUnavailable(Conflict):
    """The requested time is not a free slot of the practitioner (taken, blocked, outside availability)."""

    code = "slot_unavailable"
    title = "That time is not available"


class NoticePeriodPassed(Conflict):
    """Patients cannot reschedule inside the organization's notice period."""

    code = "notice_period_passed"
    title = "Too late to change this appointment online"


class AppointmentNotChangeable(Conflict):
    """The appointment's status does not allow this change (e.g. already cancelled or completed)."""

    code = "appointment_not_changeable"
    title = "The appointment can no longer be changed"


# ---- organization rules ------------------------------------------------------------------------------


async def get_policy(session: AsyncSession, org_id: int) -> SchedulingPolicy:
    """The organization's scheduling rules (defaults when it has never set them)."""
    policy = await session.get(SchedulingPolicy, org_id)
    if policy is None:
        policy = SchedulingPolicy(org_id=org_id, **POLICY_DEFAULTS)
    return policy


async def update_policy(
    session: AsyncSession, principal: Principal, *, data: PolicyUpdate
) -> SchedulingPolicy:
    reach_for(principal, Resource.SCHEDULE, Action.UPDATE)
    if not rules.manages_schedules(principal):
        raise Forbidden("Only coordinators and administrators set scheduling rules.")
    policy = await session.get(SchedulingPolicy, principal.org_id)
    if policy is None:
        policy = SchedulingPolicy(org_id=principal.org_id)
        session.add(policy)
    for key, value in data.model_dump().items():
        setattr(policy, key, value)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.SCHEDULE,
        action=Action.UPDATE,
        patient_id=None,
        resource_id=f"policy/{principal.org_id}",
        detail=data.model_dump(),
    )
    return policy


# ---- visit types and availability --------------------------------------------------------------------


async def create_visit_type(
    session: AsyncSession, principal: Principal, *, data: VisitTypeCreate
) -> VisitType:
    reach_for(principal, Resource.SCHEDULE, Action.CREATE)
    if not rules.manages_schedules(principal):
        raise Forbidden("Only coordinators and administrators define visit types.")
    taken = await session.scalar(
        select(exists().where(VisitType.org_id == principal.org_id, VisitType.name == data.name))
    )
    if taken:
        raise ValidationFailed(errors=[FieldError("name", "A visit type with this name exists.")])
    vt = VisitType(
        org_id=principal.org_id,
        name=data.name,
        duration_minutes=data.duration_minutes,
        modalities=[str(m) for m in dict.fromkeys(data.modalities)],
        patient_kind=data.patient_kind,
        active=True,
    )
    session.add(vt)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.SCHEDULE,
        action=Action.CREATE,
        patient_id=None,
        resource_id=f"visit-type/{vt.id}",
    )
    return vt


async def list_visit_types(session: AsyncSession, principal: Principal) -> list[VisitType]:
    reach_for(principal, Resource.SCHEDULE, Action.SEARCH)
    rows = await session.execute(
        select(VisitType)
        .where(VisitType.org_id == principal.org_id, VisitType.active.is_(True))
        .order_by(VisitType.name)
    )
    return list(rows.scalars())


async def _visit_type(session: AsyncSession, org_id: int, visit_type_id: int) -> VisitType:
    vt = await session.get(VisitType, visit_type_id)
    if vt is None or vt.org_id != org_id or not vt.active:
        raise VisitTypeNotFound()
    return vt


async def _practitioner(
    session: AsyncSession, org_id: int, practitioner_id: int, *, lock: bool = False
) -> Practitioner:
    stmt = select(Practitioner).where(Practitioner.id == practitioner_id, Practitioner.org_id == org_id)
    if lock:
        stmt = stmt.with_for_update()
    prac = (await session.execute(stmt)).scalar_one_or_none()
    if prac is None:
        raise PractitionerNotFound()
    return prac


async def _authorize_availability(
    session: AsyncSession, principal: Principal, practitioner_id: int, action: Action
) -> Practitioner:
    reach = reach_for(principal, Resource.SCHEDULE, action)
    if reach is Reach.OWN and practitioner_id != principal.practitioner_id:
        # A clinician's grant reaches only their own availability: a colleague's is outside reach and
        # answered like an unknown practitioner (404), as everywhere else in the API.
        raise PractitionerNotFound()
    return await _practitioner(session, principal.org_id, practitioner_id)


async def add_template(
    session: AsyncSession, principal: Principal, *, data: TemplateCreate
) -> AvailabilityTemplate:
    await _authorize_availability(session, principal, data.practitioner_id, Action.CREATE)
    if data.start_time >= data.end_time:
        raise ValidationFailed(errors=[FieldError("end_time", "The block must end after it starts.")])
    if data.valid_from and data.valid_until and data.valid_until < data.valid_from:
        raise ValidationFailed(errors=[FieldError("valid_until", "Must not be before valid_from.")])
    row = AvailabilityTemplate(org_id=principal.org_id, **data.model_dump())
    session.add(row)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.SCHEDULE,
        action=Action.CREATE,
        patient_id=None,
        resource_id=f"template/{row.id}",
    )
    return row


async def add_exception(
    session: AsyncSession, principal: Principal, *, data: ExceptionCreate
) -> AvailabilityException:
    await _authorize_availability(session, principal, data.practitioner_id, Action.CREATE)
    if (data.start_time is None) != (data.end_time is None):
        raise ValidationFailed(errors=[FieldError("end_time", "Give both start and end, or neither.")])
    if data.start_time is not None and data.end_time is not None and data.start_time >= data.end_time:
        raise ValidationFailed(errors=[FieldError("end_time", "The block must end after it starts.")])
    row = AvailabilityException(org_id=principal.org_id, **data.model_dump())
    session.add(row)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.SCHEDULE,
        action=Action.CREATE,
        patient_id=None,
        resource_id=f"exception/{row.id}",
    )
    return row


async def availability(
    session: AsyncSession, principal: Principal, *, practitioner_id: int
) -> tuple[list[AvailabilityTemplate], list[AvailabilityException]]:
    reach_for(principal, Resource.SCHEDULE, Action.READ)
    await _practitioner(session, principal.org_id, practitioner_id)
    templates = await session.execute(
        select(AvailabilityTemplate)
        .where(AvailabilityTemplate.practitioner_id == practitioner_id)
        .order_by(AvailabilityTemplate.weekday, AvailabilityTemplate.start_time)
    )
    exceptions = await session.execute(
        select(AvailabilityException)
        .where(AvailabilityException.practitioner_id == practitioner_id)
        .order_by(AvailabilityException.on_date)
    )
    return list(templates.scalars()), list(exceptions.scalars())


# ---- slots -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferedSlot:
    practitioner_id: int
    practitioner_name: str
    start_at: datetime
    end_at: datetime
    licence_basis: str


@dataclass(frozen=True)
class Unlicensed:
    practitioner_id: int
    practitioner_name: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SlotSearch:
    state: str
    slots: list[OfferedSlot]
    unlicensed: list[Unlicensed]
    message: str | None


async def _free_slots(
    session: AsyncSession,
    prac: Practitioner,
    *,
    first_day: date,
    last_day: date,
    duration: timedelta,
    policy: SchedulingPolicy,
    now: datetime,
    ignore_appointment_id: int | None = None,
) -> list[Interval]:
    tz = ZoneInfo(prac.timezone)
    templates = (
        await session.execute(
            select(AvailabilityTemplate).where(AvailabilityTemplate.practitioner_id == prac.id)
        )
    ).scalars()
    exceptions = (
        await session.execute(
            select(AvailabilityException).where(
                AvailabilityException.practitioner_id == prac.id,
                AvailabilityException.on_date >= first_day - timedelta(days=1),
                AvailabilityException.on_date <= last_day + timedelta(days=1),
            )
        )
    ).scalars()
    window_start = datetime.combine(first_day, time(0), tzinfo=tz) - timedelta(days=1)
    window_end = datetime.combine(last_day, time(0), tzinfo=tz) + timedelta(days=2)
    busy_stmt = select(Appointment.start_at, Appointment.end_at, Appointment.id).where(
        Appointment.practitioner_id == prac.id,
        Appointment.status.in_(ACTIVE_STATUSES),
        Appointment.start_at < window_end,
        Appointment.end_at > window_start,
    )
    busy = [
        Interval(s, e)
        for s, e, appt_id in (await session.execute(busy_stmt)).all()
        if appt_id != ignore_appointment_id
    ]
    return generate_slots(
        [WeeklyBlock(t.weekday, t.start_time, t.end_time, t.valid_from, t.valid_until) for t in templates],
        [DayException(e.on_date, e.start_time, e.end_time) for e in exceptions],
        tz=tz,
        first_day=first_day,
        last_day=last_day,
        duration=duration,
        step=timedelta(minutes=policy.slot_step_minutes),
        busy=busy,
        not_before=now + timedelta(minutes=policy.min_booking_lead_minutes),
    )


async def _names(session: AsyncSession, practitioner_ids: Sequence[int]) -> dict[int, str]:
    rows = await session.execute(
        select(Practitioner.id, User.display_name)
        .join(User, User.id == Practitioner.user_id)
        .where(Practitioner.id.in_(list(practitioner_ids)))
    )
    return dict(rows.all())


async def find_slots(
    session: AsyncSession,
    principal: Principal,
    *,
    visit_type_id: int,
    state: str,
    first_day: date,
    days: int = 14,
    practitioner_id: int | None = None,
) -> SlotSearch:
    """Free slots of practitioners licensed in `state` on each slot's date; when nobody is licensed, the
    answer says why for each practitioner (the licensure gate at booking, REFERENCE.md 3)."""
    reach_for(principal, Resource.SCHEDULE, Action.SEARCH)
    state = state.upper()
    if not 1 <= days <= MAX_SEARCH_DAYS:
        raise ValidationFailed(errors=[FieldError("days", f"Between 1 and {MAX_SEARCH_DAYS}.")])
    vt = await _visit_type(session, principal.org_id, visit_type_id)
    policy = await get_policy(session, principal.org_id)
    stmt = (
        select(Practitioner)
        .join(User, User.id == Practitioner.user_id)
        .where(Practitioner.org_id == principal.org_id, User.is_active.is_(True))
        .order_by(Practitioner.id)
    )
    if practitioner_id is not None:
        stmt = stmt.where(Practitioner.id == practitioner_id)
    pracs = list((await session.execute(stmt)).scalars())
    names = await _names(session, [p.id for p in pracs])
    creds = await licensure.credentials_for(session, [p.id for p in pracs])
    now = utc_now()
    last_day = first_day + timedelta(days=days - 1)
    slots: list[OfferedSlot] = []
    unlicensed: list[Unlicensed] = []
    from telecare.licensure.compact_members import COMPACTS
    from telecare.licensure.rules import authority_in

    for prac in pracs:
        free = await _free_slots(
            session,
            prac,
            first_day=first_day,
            last_day=last_day,
            duration=timedelta(minutes=vt.duration_minutes),
            policy=policy,
            now=now,
        )
        c = creds[prac.id]
        reasons: list[str] = []
        offered = 0
        for slot in free:
            on = slot.start.astimezone(ZoneInfo(prac.timezone)).date()
            result = authority_in(state, on, c.licences, c.privileges, COMPACTS)
            if result.authority is None:
                reasons.extend(r for r in result.reasons if r not in reasons)
                continue
            offered += 1
            slots.append(
                OfferedSlot(prac.id, names[prac.id], slot.start, slot.end, str(result.authority.basis))
            )
        if offered == 0:
            if not free:
                # Still say whether licensure would have allowed them, so the message is honest.
                today = authority_in(state, first_day, c.licences, c.privileges, COMPACTS)
                reasons = list(today.reasons)
            if reasons:
                unlicensed.append(Unlicensed(prac.id, names[prac.id], tuple(reasons)))
    slots.sort(key=lambda s: (s.start_at, s.practitioner_id))
    message = None
    if not slots:
        if pracs and len(unlicensed) == len(pracs):
            message = (
                f"No practitioner is licensed to see a patient located in {state} on these dates. "
                "A visit is legally given where the patient is at the time of the visit, so the clinician "
                f"needs a licence or compact privilege valid in {state}."
            )
        else:
            message = "No free times in these dates; try later dates or another visit type."
    return SlotSearch(state, slots, unlicensed, message)


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
    if principal.role is Role.PATIENT:
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
    if principal.role is Role.PATIENT and _inside_notice(appt, policy, now):
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
    by_patient = principal.role is Role.PATIENT or patient_requested
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
    if principal.role.is_clinician:
        stmt = stmt.where(Appointment.practitioner_id == (principal.practitioner_id or -1))
    elif principal.role is not Role.PATIENT:
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
    elif principal.role.is_clinician:
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
