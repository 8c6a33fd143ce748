"""REST routes for scheduling: visit types, availability, slots, appointments, calendar, coverage."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.params import PathId, QueryId
from telecare.core.time import utc_now
from telecare.licensure import service as licensure
from telecare.scheduling import availability, service
from telecare.scheduling.schemas import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentRead,
    AppointmentReschedule,
    ExceptionCreate,
    ExceptionRead,
    PolicyRead,
    PolicyUpdate,
    SlotRead,
    SlotSearchRead,
    TemplateCreate,
    TemplateRead,
    UnlicensedRead,
    VisitTypeCreate,
    VisitTypeRead,
)

router = APIRouter(prefix="/api/v1", tags=["scheduling"])


@router.get("/visit-types", response_model=list[VisitTypeRead])
async def list_visit_types(session: DbSession, principal: CurrentPrincipal) -> list[VisitTypeRead]:
    """The organization's bookable visit types."""
    return [VisitTypeRead.model_validate(v) for v in await availability.list_visit_types(session, principal)]


@router.post("/visit-types", response_model=VisitTypeRead, status_code=201)
async def create_visit_type(
    body: VisitTypeCreate, session: DbSession, principal: CurrentPrincipal
) -> VisitTypeRead:
    """Define a visit type (coordinators, administrators)."""
    return VisitTypeRead.model_validate(await availability.create_visit_type(session, principal, data=body))


@router.get("/scheduling/policy", response_model=PolicyRead)
async def read_policy(session: DbSession, principal: CurrentPrincipal) -> PolicyRead:
    """Notice period, check-in window, no-show grace, reminder offsets."""
    return PolicyRead.model_validate(await availability.get_policy(session, principal.org_id))


@router.put("/scheduling/policy", response_model=PolicyRead)
async def update_policy(body: PolicyUpdate, session: DbSession, principal: CurrentPrincipal) -> PolicyRead:
    """Change the organization's scheduling rules (coordinators, administrators)."""
    return PolicyRead.model_validate(await availability.update_policy(session, principal, data=body))


@router.post("/availability/templates", response_model=TemplateRead, status_code=201)
async def add_template(body: TemplateCreate, session: DbSession, principal: CurrentPrincipal) -> TemplateRead:
    """Add a weekly availability block (local time in the practitioner's zone)."""
    return TemplateRead.model_validate(await availability.add_template(session, principal, data=body))


@router.post("/availability/exceptions", response_model=ExceptionRead, status_code=201)
async def add_exception(
    body: ExceptionCreate, session: DbSession, principal: CurrentPrincipal
) -> ExceptionRead:
    """Block time or a holiday on one local date."""
    return ExceptionRead.model_validate(await availability.add_exception(session, principal, data=body))


@router.get("/practitioners/{practitioner_id}/availability")
async def read_availability(
    practitioner_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """A practitioner's weekly templates and exceptions."""
    templates, exceptions = await availability.availability(
        session, principal, practitioner_id=practitioner_id
    )
    return {
        "templates": [TemplateRead.model_validate(t).model_dump(mode="json") for t in templates],
        "exceptions": [ExceptionRead.model_validate(e).model_dump(mode="json") for e in exceptions],
    }


@router.get("/slots", response_model=SlotSearchRead)
async def find_slots(
    session: DbSession,
    principal: CurrentPrincipal,
    visit_type_id: QueryId,
    state: Annotated[str, Query(min_length=2, max_length=2, pattern="^[A-Za-z]{2}$")],
    start: Annotated[date | None, Query(alias="from")] = None,
    days: Annotated[int, Query(ge=1, le=service.MAX_SEARCH_DAYS)] = 7,
    practitioner_id: QueryId | None = None,
) -> SlotSearchRead:
    """Free slots of practitioners licensed in `state` (where the patient expects to be); when nobody is
    licensed, `message` and `unlicensed` say why."""
    result = await availability.find_slots(
        session,
        principal,
        visit_type_id=visit_type_id,
        state=state,
        first_day=start or utc_now().date(),
        days=days,
        practitioner_id=practitioner_id,
    )
    return SlotSearchRead(
        state=result.state,
        slots=[SlotRead(**s.__dict__) for s in result.slots],
        unlicensed=[UnlicensedRead(**{**u.__dict__, "reasons": list(u.reasons)}) for u in result.unlicensed],
        message=result.message,
    )


@router.post("/appointments", response_model=AppointmentRead, status_code=201)
async def book(body: AppointmentCreate, session: DbSession, principal: CurrentPrincipal) -> AppointmentRead:
    """Book a visit (patients for themselves; coordinators with `patient_id`)."""
    appt = await service.book_appointment(
        session,
        principal,
        practitioner_id=body.practitioner_id,
        visit_type_id=body.visit_type_id,
        start_at=body.start_at,
        modality=body.modality,
        expected_state=body.expected_state,
        patient_id=body.patient_id,
    )
    return AppointmentRead.model_validate(appt)


@router.get("/appointments", response_model=list[AppointmentRead])
async def my_appointments(session: DbSession, principal: CurrentPrincipal) -> list[AppointmentRead]:
    """The caller's own visits (a patient's, or a clinician's schedule)."""
    return [AppointmentRead.model_validate(a) for a in await service.my_appointments(session, principal)]


@router.get("/appointments/{appointment_id}", response_model=AppointmentRead)
async def read_appointment(
    appointment_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> AppointmentRead:
    """One appointment."""
    return AppointmentRead.model_validate(await service.load_appointment(session, principal, appointment_id))


@router.post("/appointments/{appointment_id}/reschedule", response_model=AppointmentRead)
async def reschedule(
    appointment_id: PathId, body: AppointmentReschedule, session: DbSession, principal: CurrentPrincipal
) -> AppointmentRead:
    """Move a booked visit to another free slot (not inside the notice period for patients)."""
    appt = await service.reschedule_appointment(
        session,
        principal,
        appointment_id=appointment_id,
        start_at=body.start_at,
        practitioner_id=body.practitioner_id,
    )
    return AppointmentRead.model_validate(appt)


@router.post("/appointments/{appointment_id}/cancel", response_model=AppointmentRead)
async def cancel(
    appointment_id: PathId, body: AppointmentCancel, session: DbSession, principal: CurrentPrincipal
) -> AppointmentRead:
    """Cancel a visit; inside the notice period it is recorded as a late cancellation."""
    appt = await service.cancel_appointment(
        session, principal, appointment_id=appointment_id, reason=body.reason
    )
    return AppointmentRead.model_validate(appt)


@router.post("/appointments/{appointment_id}/reassign", response_model=AppointmentRead)
async def reassign(
    appointment_id: PathId, practitioner_id: QueryId, session: DbSession, principal: CurrentPrincipal
) -> AppointmentRead:
    """Coordinators: give the visit to a licensed colleague at the same time."""
    appt = await service.reassign_practitioner(
        session, principal, appointment_id=appointment_id, practitioner_id=practitioner_id
    )
    return AppointmentRead.model_validate(appt)


@router.get("/calendar")
async def calendar(
    session: DbSession, principal: CurrentPrincipal, day: date, practitioner_id: QueryId | None = None
) -> list[dict[str, Any]]:
    """Each practitioner's visits on a local day."""
    days = await service.day_calendar(session, principal, day=day, practitioner_id=practitioner_id)
    return [
        {
            "practitioner_id": d.practitioner_id,
            "name": d.name,
            "timezone": d.timezone,
            "entries": [
                {
                    **AppointmentRead.model_validate(e.appointment).model_dump(mode="json"),
                    "patient_name": e.patient_name,
                    "local_start": e.local_start.isoformat(),
                    "flagged_for_reassignment": e.flagged,
                }
                for e in d.entries
            ],
        }
        for d in days
    ]


@router.get("/coverage")
async def coverage(session: DbSession, principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """States each practitioner can serve today, and credentials expiring within 60 days."""
    rows = await licensure.coverage(session, principal, today=utc_now().date())
    return [
        {
            "practitioner_id": r.practitioner_id,
            "name": r.display_name,
            "credentials": r.credentials,
            "states": {s: str(a.basis) for s, a in r.states.items()},
            "expiring": [e.__dict__ | {"expires_on": e.expires_on.isoformat()} for e in r.expiring],
        }
        for r in rows
    ]
