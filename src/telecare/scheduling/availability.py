"""Scheduling's supply side: the organization's scheduling rules, visit types, weekly availability templates
and exceptions in the practitioner's time zone, and the slot search limited to licensed practitioners."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Reach, Resource
from telecare.access.service import (
    reach_for,
    record_access,
)
from telecare.auth.principal import Principal
from telecare.core.errors import FieldError, Forbidden, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, User
from telecare.licensure import service as licensure
from telecare.scheduling.errors import PractitionerNotFound, VisitTypeNotFound
from telecare.scheduling.models import (
    ACTIVE_STATUSES,
    POLICY_DEFAULTS,
    Appointment,
    AvailabilityException,
    AvailabilityTemplate,
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
    answer says why for each practitioner (the licensure gate at booking,
    docs/licensure.md#what-the-code-does)."""
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
