"""Pages for scheduling, check-in, documentation, billing review and the survey (server-rendered, no
inline scripts). The call page, the camera/microphone test and the live waiting room are in the real-time
half (`telecare.visits.live`).

Form errors re-render the form: each service call runs in a savepoint, so a refused step leaves nothing
half-written in the request's transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.billing import service as billing
from telecare.billing.models import BillingLineStatus
from telecare.core.errors import AppError, Forbidden
from telecare.core.time import utc_now
from telecare.identity import service as identity
from telecare.identity.geo import US_STATES
from telecare.identity.models import Patient, Role
from telecare.licensure import service as licensure
from telecare.scheduling import availability
from telecare.scheduling import service as scheduling
from telecare.scheduling.models import AppointmentStatus, Modality
from telecare.visits import notes
from telecare.visits import service as visits
from telecare.visits.models import LocationType, NoteStatus
from telecare.visits.schemas import CheckIn, NoteUpdate
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

_CLINICIANS = frozenset({Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST})
_COORDINATOR = frozenset({Role.COORDINATOR})
NAV_ITEMS = (
    NavItem(
        "/visits",
        "Visits",
        resource=Resource.APPOINTMENT,
        action=Action.SEARCH,
        roles=_CLINICIANS | {Role.PATIENT},
        order=10,
    ),
    NavItem(
        "/clinic/queue",
        "Waiting room",
        resource=Resource.VISIT,
        action=Action.SEARCH,
        roles=_CLINICIANS,
        order=11,
    ),
    NavItem(
        "/schedule/calendar",
        "Calendar",
        resource=Resource.SCHEDULE,
        action=Action.UPDATE,
        roles=_COORDINATOR,
        order=10,
    ),
    NavItem(
        "/schedule/coverage",
        "Coverage",
        resource=Resource.SCHEDULE,
        action=Action.UPDATE,
        roles=_COORDINATOR,
        order=11,
    ),
    NavItem(
        "/billing/review",
        "Billing",
        resource=Resource.BILLING_LINE,
        action=Action.UPDATE,
        roles=_COORDINATOR,
        order=12,
    ),
)


async def _chart_visits(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    """Chart section: the patient's visits, read through the scheduling service (authorised, audited)."""
    rows = await scheduling.patient_appointments(session, principal, patient_id=patient.id)
    return {"appointments": rows, "can_book": rules.is_coordinator(principal)}


CHART_SECTIONS = (
    ChartSection(
        "visits",
        "Visits",
        _chart_visits,
        "visits/chart_section.html",
        resource=Resource.APPOINTMENT,
        order=30,
    ),
)


async def attempt(
    session: AsyncSession, call: Callable[[], Awaitable[T]]
) -> tuple[T | None, AppError | None]:
    """Run one service call in a savepoint; on an expected error roll back and hand the error to the form."""
    try:
        async with session.begin_nested():
            return await call(), None
    except AppError as exc:
        return None, exc


def _page(
    request: Request, name: str, principal: Principal, status_code: int = 200, **ctx: Any
) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"principal": principal, **ctx}, status_code=status_code)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# ---- lists -------------------------------------------------------------------------------------------


@router.get("/visits", response_class=HTMLResponse)
async def visits_home(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    if rules.is_coordinator(principal):
        return _see_other("/schedule/calendar")
    if not rules.is_patient(principal) and not rules.has_clinical_role(principal):
        raise Forbidden("Visits are for patients and clinicians.")
    appts = await scheduling.my_appointments(session, principal)
    names = await scheduling.visit_labels(session, [a.id for a in appts])
    tz = await scheduling.org_timezone(session, principal.org_id)
    now = utc_now()
    upcoming = sorted((a for a in appts if a.end_at >= now), key=lambda a: a.start_at)
    past = [a for a in appts if a.end_at < now]
    queue = await visits.clinician_queue(session, principal) if rules.has_clinical_role(principal) else []
    return _page(
        request,
        "visits/list.html",
        principal,
        upcoming=upcoming,
        past=past,
        names=names,
        tz=tz,
        queue=queue,
        now=now,
    )


# ---- booking -----------------------------------------------------------------------------------------


async def _patient_for_page(
    session: AsyncSession, principal: Principal, patient_id: int | None
) -> Patient | None:
    from telecare.identity import service as identity

    pid = principal.patient_id if rules.is_patient(principal) else patient_id
    if pid is None:
        return None
    return await identity.get_patient(session, principal, patient_id=pid)


@router.get("/visits/book", response_class=HTMLResponse)
async def book_form(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    visit_type_id: int | None = None,
    state: Annotated[str | None, Query(max_length=2)] = None,
    day: date | None = None,
    patient_id: int | None = None,
) -> Response:
    if not (rules.is_patient(principal) or rules.is_coordinator(principal)):
        raise Forbidden("Patients and coordinators book visits.")
    types = await availability.list_visit_types(session, principal)
    patient = await _patient_for_page(session, principal, patient_id)
    state = (state or (patient.state if patient else "") or "").upper()
    day = day or (utc_now() + timedelta(days=1)).date()
    search = None
    error = None
    if visit_type_id is not None and state:
        search, err = await attempt(
            session,
            lambda: availability.find_slots(
                session, principal, visit_type_id=visit_type_id, state=state, first_day=day, days=7
            ),
        )
        error = err.detail if err else None
    vt = next((t for t in types if t.id == visit_type_id), None)
    zone = await scheduling.org_timezone(session, principal.org_id)
    return _page(
        request,
        "visits/book.html",
        principal,
        types=types,
        vt=vt,
        state=state,
        day=day,
        search=search,
        error=error,
        patient=patient,
        states=US_STATES,
        tz=zone,
    )


@router.post("/visits/book", response_class=HTMLResponse)
async def book(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    visit_type_id: Annotated[int, Form()],
    practitioner_id: Annotated[int, Form()],
    start_at: Annotated[datetime, Form()],
    modality: Annotated[Modality, Form()],
    state: Annotated[str, Form(min_length=2, max_length=2)],
    patient_id: Annotated[int | None, Form()] = None,
) -> Response:
    appt, err = await attempt(
        session,
        lambda: scheduling.book_appointment(
            session,
            principal,
            practitioner_id=practitioner_id,
            visit_type_id=visit_type_id,
            start_at=start_at,
            modality=modality,
            expected_state=state,
            patient_id=patient_id,
        ),
    )
    if err is not None or appt is None:
        types = await availability.list_visit_types(session, principal)
        patient = await _patient_for_page(session, principal, patient_id)
        zone = await scheduling.org_timezone(session, principal.org_id)
        return _page(
            request,
            "visits/book.html",
            principal,
            status_code=err.status_code if err else 400,
            types=types,
            vt=None,
            state=state,
            day=start_at.date(),
            search=None,
            error=err.detail if err else "Not booked.",
            patient=patient,
            states=US_STATES,
            tz=zone,
        )
    if rules.is_coordinator(principal):
        return _see_other(f"/schedule/calendar?day={appt.start_at.date().isoformat()}&booked={appt.id}")
    return _see_other(f"/visits/{appt.id}?booked=1")


# ---- one visit (patient and clinician) ---------------------------------------------------------------


@router.get("/visits/{appointment_id}", response_class=HTMLResponse)
async def visit_detail(
    request: Request, appointment_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    from telecare.access.policy import Resource

    appt = await scheduling.load_appointment(session, principal, appointment_id, resource=Resource.VISIT)
    names = await scheduling.visit_labels(session, [appt.id])
    tz = await scheduling.org_timezone(session, appt.org_id)
    window = await visits.check_in_window(session, appt)
    policy = await availability.get_policy(session, appt.org_id)
    now = utc_now()
    summary = None
    if appt.status == AppointmentStatus.COMPLETED and rules.is_patient(principal):
        summary = await notes.visit_summary(session, principal, appointment_id=appt.id)
    attestation = await visits.attestation_for(session, appt.id)
    return _page(
        request,
        "visits/detail.html",
        principal,
        appt=appt,
        names=names.get(appt.id, {}),
        tz=tz,
        window=window,
        now=now,
        summary=summary,
        late=now > appt.start_at - timedelta(hours=policy.cancel_notice_hours),
        policy=policy,
        attestation=attestation,
        block_message=visits.patient_block_message(appt.licensure_block_state or "")
        if appt.licensure_blocked_at
        else None,
        booked=request.query_params.get("booked"),
    )


@router.post("/visits/{appointment_id}/cancel", response_class=HTMLResponse)
async def cancel(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    reason: Annotated[str | None, Form(max_length=200)] = None,
) -> Response:
    await scheduling.cancel_appointment(
        session, principal, appointment_id=appointment_id, reason=reason or None
    )
    return _see_other(f"/visits/{appointment_id}")


@router.get("/visits/{appointment_id}/reschedule", response_class=HTMLResponse)
async def reschedule_form(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    day: date | None = None,
) -> Response:
    appt = await scheduling.load_appointment(session, principal, appointment_id)
    day = day or max(utc_now().date(), appt.start_at.date() - timedelta(days=3))
    search = await availability.find_slots(
        session,
        principal,
        visit_type_id=appt.visit_type_id,
        state=appt.expected_state,
        first_day=day,
        days=7,
        practitioner_id=appt.practitioner_id,
    )
    tz = await scheduling.org_timezone(session, appt.org_id)
    return _page(
        request, "visits/reschedule.html", principal, appt=appt, search=search, day=day, tz=tz, error=None
    )


@router.post("/visits/{appointment_id}/reschedule", response_class=HTMLResponse)
async def reschedule(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    start_at: Annotated[datetime, Form()],
) -> Response:
    new, err = await attempt(
        session,
        lambda: scheduling.reschedule_appointment(
            session, principal, appointment_id=appointment_id, start_at=start_at
        ),
    )
    if err is not None or new is None:
        appt = await scheduling.load_appointment(session, principal, appointment_id)
        tz = await scheduling.org_timezone(session, appt.org_id)
        return _page(
            request,
            "visits/reschedule.html",
            principal,
            status_code=err.status_code if err else 400,
            appt=appt,
            search=None,
            day=start_at.date(),
            tz=tz,
            error=err.detail if err else "Not moved.",
        )
    return _see_other(f"/visits/{new.id}?booked=1")


# ---- check-in ----------------------------------------------------------------------------------------


async def _check_in_page(
    request: Request, session: AsyncSession, principal: Principal, appointment_id: int, **ctx: Any
) -> HTMLResponse:
    from telecare.access.policy import Resource

    appt = await scheduling.load_appointment(session, principal, appointment_id, resource=Resource.VISIT)
    consent = await visits.current_consent(session, appt.org_id)
    window = await visits.check_in_window(session, appt)
    tz = await scheduling.org_timezone(session, appt.org_id)
    patient = await identity.get_patient(session, principal, patient_id=appt.patient_id)
    defaults = {
        "location_type": "home",
        "address_line": patient.address_line if patient else "",
        "city": patient.city if patient else "",
        "state": appt.expected_state,
        "postal_code": patient.postal_code if patient else "",
        "callback_phone": patient.phone if patient else "",
    }
    ctx.setdefault("form", defaults)
    ctx.setdefault("errors", [])
    ctx.setdefault("error", None)
    ctx.setdefault("outcome", None)
    status = ctx.pop("status_code", 200)
    return _page(
        request,
        "visits/check_in.html",
        principal,
        status_code=status,
        appt=appt,
        consent=consent,
        window=window,
        now=utc_now(),
        tz=tz,
        states=US_STATES,
        **ctx,
    )


@router.get("/visits/{appointment_id}/check-in", response_class=HTMLResponse)
async def check_in_form(
    request: Request, appointment_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    if not rules.is_patient(principal):
        return _see_other(f"/visits/{appointment_id}")
    return await _check_in_page(request, session, principal, appointment_id)


@router.post("/visits/{appointment_id}/check-in", response_class=HTMLResponse)
async def check_in(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    location_type: Annotated[str, Form(max_length=8)] = "",
    address_line: Annotated[str, Form(max_length=200)] = "",
    city: Annotated[str, Form(max_length=100)] = "",
    state: Annotated[str, Form(max_length=2)] = "",
    postal_code: Annotated[str, Form(max_length=10)] = "",
    callback_phone: Annotated[str, Form(max_length=40)] = "",
    consent_text_id: Annotated[int, Form()] = 0,
    consent_accepted: Annotated[str | None, Form(max_length=4)] = None,
) -> Response:
    form = {
        "location_type": location_type,
        "address_line": address_line,
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "callback_phone": callback_phone,
    }
    try:
        data = CheckIn(
            location_type=LocationType(location_type)
            if location_type in ("home", "other")
            else location_type,
            address_line=address_line,
            city=city,
            state=state,
            postal_code=postal_code or None,
            callback_phone=callback_phone or None,
            consent_text_id=consent_text_id,
            consent_accepted=consent_accepted == "yes",
        )
    except ValueError as exc:
        from pydantic import ValidationError

        errors = (
            [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
            if isinstance(exc, ValidationError)
            else [{"field": "form", "message": str(exc)}]
        )
        return await _check_in_page(
            request, session, principal, appointment_id, form=form, errors=errors, status_code=422
        )
    outcome, err = await attempt(
        session, lambda: visits.check_in(session, principal, appointment_id=appointment_id, data=data)
    )
    if err is not None:
        errors = [{"field": e.field, "message": e.message} for e in err.errors]
        return await _check_in_page(
            request,
            session,
            principal,
            appointment_id,
            form=form,
            errors=errors,
            error=err.detail,
            status_code=err.status_code,
        )
    assert outcome is not None
    if not outcome.can_join:
        return await _check_in_page(
            request, session, principal, appointment_id, form=form, outcome=outcome, status_code=409
        )
    return _see_other(f"/visits/{appointment_id}?checked_in=1")


# ---- survey ------------------------------------------------------------------------------------------


@router.post("/visits/{appointment_id}/survey", response_class=HTMLResponse)
async def survey(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    rating: Annotated[int, Form(ge=1, le=5)],
    would_recommend: Annotated[str, Form(pattern="^(yes|no)$")],
    comment: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    await notes.submit_survey(
        session,
        principal,
        appointment_id=appointment_id,
        rating=rating,
        would_recommend=would_recommend == "yes",
        comment=comment or None,
    )
    return _see_other(f"/visits/{appointment_id}?thanks=1")


# ---- clinician note ----------------------------------------------------------------------------------

NOTE_TEXT_FIELDS = (
    ("history", "History"),
    ("exam", "Exam (label patient-reported or device values as such)"),
    ("exam_limitations", "Limitations of the remote exam"),
    ("assessment", "Assessment"),
    ("plan", "Plan"),
    ("in_person_followup", "When an in-person visit is needed"),
    ("technical_issues", "Technical problems (if any)"),
    ("participants_note", "Others present (names and roles)"),
    ("patient_summary", "Summary for the patient (shown in the portal)"),
)


async def _note_page(
    request: Request, session: AsyncSession, principal: Principal, appointment_id: int, **ctx: Any
) -> HTMLResponse:
    from telecare.scheduling.models import Appointment

    note = await notes.open_note(session, principal, appointment_id=appointment_id)
    appt = await session.get(Appointment, appointment_id)
    assert appt is not None
    facts = await notes.visit_facts(session, appt)
    events = await visits.timeline(session, principal, appointment_id=appointment_id)
    lines = await billing.lines_for_visit(session, principal, appointment_id=appointment_id)
    addenda = await notes.addenda(session, note.id) if note.id is not None else []
    patient = await identity.get_patient(session, principal, patient_id=appt.patient_id)
    tz = await scheduling.org_timezone(session, appt.org_id)
    status = ctx.pop("status_code", 200)
    ctx.setdefault("errors", [])
    ctx.setdefault("error", None)
    return _page(
        request,
        "visits/note.html",
        principal,
        status_code=status,
        note=note,
        appt=appt,
        facts=facts,
        events=events,
        lines=lines,
        addenda=addenda,
        patient=patient,
        tz=tz,
        text_fields=NOTE_TEXT_FIELDS,
        states=US_STATES,
        signed=note.status == NoteStatus.SIGNED,
        **ctx,
    )


@router.get("/visits/{appointment_id}/note", response_class=HTMLResponse)
async def note_page(
    request: Request, appointment_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    return await _note_page(request, session, principal, appointment_id)


def _note_update_from_form(form: dict[str, str]) -> NoteUpdate:
    values: dict[str, Any] = {}
    for key, _ in NOTE_TEXT_FIELDS:
        values[key] = form.get(key, "").strip() or None
    for key in ("provider_location_type", "provider_city", "provider_state", "identity_method"):
        values[key] = form.get(key, "").strip() or None
    values["audio_only_reason"] = form.get("audio_only_reason") or None
    values["identity_verified"] = form.get("identity_verified") == "yes"
    capable = form.get("practitioner_video_capable")
    values["practitioner_video_capable"] = None if not capable else capable == "yes"
    minutes = form.get("total_minutes", "").strip()
    values["total_minutes"] = int(minutes) if minutes.isdigit() else None
    return NoteUpdate(**values)


@router.post("/visits/{appointment_id}/note", response_class=HTMLResponse)
async def save_note(
    request: Request, appointment_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    raw = await request.form()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    try:
        data = _note_update_from_form(form)
    except ValueError as exc:
        return await _note_page(
            request, session, principal, appointment_id, error=str(exc).splitlines()[0], status_code=422
        )
    _, err = await attempt(
        session, lambda: notes.update_note(session, principal, appointment_id=appointment_id, data=data)
    )
    if err is None and form.get("action") == "sign":
        _, err = await attempt(
            session, lambda: notes.sign_note(session, principal, appointment_id=appointment_id)
        )
    if err is not None:
        errors = [{"field": e.field, "message": e.message} for e in err.errors]
        return await _note_page(
            request,
            session,
            principal,
            appointment_id,
            error=err.detail,
            errors=errors,
            status_code=err.status_code,
        )
    return _see_other(f"/visits/{appointment_id}/note?saved=1")


@router.post("/visits/{appointment_id}/note/addenda", response_class=HTMLResponse)
async def add_addendum(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    text: Annotated[str, Form(min_length=1, max_length=20_000)],
) -> Response:
    await notes.add_addendum(session, principal, appointment_id=appointment_id, text=text)
    return _see_other(f"/visits/{appointment_id}/note")


# ---- coordinators ------------------------------------------------------------------------------------


@router.get("/schedule/calendar", response_class=HTMLResponse)
async def calendar(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    day: date | None = None,
    practitioner_id: int | None = None,
) -> Response:
    if not rules.is_coordinator(principal) and not rules.has_clinical_role(principal):
        raise Forbidden("The calendar is for coordinators and clinicians.")
    day = day or utc_now().date()
    days = await scheduling.day_calendar(session, principal, day=day, practitioner_id=practitioner_id)
    flagged = (
        await scheduling.reassignment_candidates(session, principal)
        if rules.is_coordinator(principal)
        else []
    )
    names = await scheduling.practitioner_names(session, principal)
    return _page(
        request,
        "visits/calendar.html",
        principal,
        day=day,
        days=days,
        flagged=flagged,
        names=names,
        practitioner_id=practitioner_id,
        prev_day=day - timedelta(days=1),
        next_day=day + timedelta(days=1),
        booked=request.query_params.get("booked"),
    )


@router.post("/schedule/visits/{appointment_id}/reassign", response_class=HTMLResponse)
async def reassign(
    request: Request,
    appointment_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    practitioner_id: Annotated[int, Form()],
) -> Response:
    appt = await scheduling.reassign_practitioner(
        session, principal, appointment_id=appointment_id, practitioner_id=practitioner_id
    )
    return _see_other(f"/schedule/calendar?day={appt.start_at.date().isoformat()}")


@router.get("/schedule/coverage", response_class=HTMLResponse)
async def coverage(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    today = utc_now().date()
    rows = await licensure.coverage(session, principal, today=today)
    from telecare.licensure.compact_members import COMPACTS

    return _page(
        request, "visits/coverage.html", principal, rows=rows, today=today, compacts=COMPACTS.values()
    )


async def _billing_page(
    request: Request, session: AsyncSession, principal: Principal, status: str, err: AppError | None = None
) -> HTMLResponse:
    chosen = BillingLineStatus(status) if status in {s.value for s in BillingLineStatus} else None
    lines = await billing.lines_for_review(session, principal, status=chosen)
    trail = {line.id: await billing.adjustments(session, line.id) for line in lines}
    names = await scheduling.visit_labels(session, [line.appointment_id for line in lines])
    return _page(
        request,
        "visits/billing.html",
        principal,
        status_code=err.status_code if err else 200,
        lines=lines,
        trail=trail,
        names=names,
        status=status,
        error=err.detail if err else None,
        errors=[{"field": e.field, "message": e.message} for e in err.errors] if err else [],
    )


@router.get("/billing/review", response_class=HTMLResponse)
async def billing_review(
    request: Request, session: DbSession, principal: CurrentPrincipal, status: str = "proposed"
) -> Response:
    return await _billing_page(request, session, principal, status)


@router.post("/billing/review/{line_id}", response_class=HTMLResponse)
async def billing_adjust(
    request: Request,
    line_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    reason: Annotated[str, Form(max_length=500)] = "",
    cpt_code: Annotated[str, Form(max_length=5)] = "",
    place_of_service: Annotated[str, Form(max_length=2)] = "",
    modifiers: Annotated[str, Form(max_length=20)] = "",
    decision: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    line_status = {"approve": BillingLineStatus.APPROVED, "void": BillingLineStatus.VOID}.get(decision)
    change = billing.Adjustment(
        cpt_code=cpt_code.strip() or None,
        place_of_service=place_of_service.strip() or None,
        modifiers=[m.strip() for m in modifiers.split(",") if m.strip()] if modifiers.strip() else None,
        status=line_status,
    )
    _, err = await attempt(
        session,
        lambda: billing.adjust_line(session, principal, line_id=line_id, change=change, reason=reason),
    )
    if err is not None:
        return await _billing_page(request, session, principal, "proposed", err)
    return _see_other("/billing/review")
