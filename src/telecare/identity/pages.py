"""Home pages, the patient list, the patient chart shell, break-the-glass and the patient's own contact form.

Pages are thin: every read and write goes through the identity and access services (policy + audit)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from telecare.access import flows, rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource, allowed_reach
from telecare.access.service import BreakGlassRefused, PatientNotAccessible
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import Forbidden
from telecare.identity import service
from telecare.identity.models import Patient
from telecare.identity.schemas import PatientUpdate
from telecare.web.chart import render_sections
from telecare.web.forms import field_errors
from telecare.web.templating import nav_for, page

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
# The fields of the contact form. Listed, not derived from PatientUpdate: a blank field clears its value,
# so a field the form does not show must never be part of the update.
CONTACT_FIELDS = (
    "email",
    "phone",
    "address_line",
    "city",
    "state",
    "postal_code",
    "preferred_language",
    "emergency_contact_name",
    "emergency_contact_phone",
    "emergency_contact_relationship",
)


@router.get("/home", response_class=HTMLResponse)
async def home(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    saved: Annotated[bool, Query()] = False,
) -> Response:
    """The signed-in user's start page, by role."""
    if rules.is_patient(principal):
        return await _patient_home(request, session, principal, saved=saved)
    if allowed_reach(principal.role, Resource.PATIENT, Action.SEARCH) is not None:
        return await _patient_list(request, session, principal, query=None, page_no=1)
    return page(request, "home_staff.html", links=nav_for(principal)[1:])


async def _patient_home(
    request: Request, session: DbSession, principal: Principal, *, saved: bool
) -> Response:
    if principal.patient_id is None:
        return page(request, "home_patient.html", patient=None, team=[], saved=False)
    patient = await service.get_patient(session, principal, patient_id=principal.patient_id)
    team = await service.care_team(session, principal, patient_id=patient.id)
    return page(request, "home_patient.html", patient=patient, team=team, saved=saved)


@router.get("/patients", response_class=HTMLResponse)
async def patient_list(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    q: Annotated[str | None, Query(max_length=100)] = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> Response:
    """The patients this staff member may see (care team and emergency access for clinicians, the whole
    organization's contact list for coordinators), searchable by name and paged."""
    return await _patient_list(request, session, principal, query=(q or "").strip() or None, page_no=page_no)


async def _patient_list(
    request: Request, session: DbSession, principal: Principal, *, query: str | None, page_no: int
) -> Response:
    rows, total = await service.search_patients(
        session, principal, name=query, limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE
    )
    pages = max(1, -(-total // PAGE_SIZE))
    return page(
        request,
        "patients.html",
        patients=rows,
        total=total,
        q=query or "",
        page_no=page_no,
        pages=pages,
        first=(page_no - 1) * PAGE_SIZE + 1 if rows else 0,
        last=(page_no - 1) * PAGE_SIZE + len(rows),
        contact_view=rules.is_coordinator(principal),
    )


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def chart(
    request: Request, patient_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """The patient chart shell: a banner and every registered section the role may read."""
    try:
        patient = await service.get_patient(session, principal, patient_id=patient_id)
    except PatientNotAccessible:
        if rules.has_clinical_role(principal):
            # Same answer whether the patient exists or not (no existence oracle); the denial is audited.
            return _break_glass_form(request, patient_id, error=None)
        raise
    sections = await render_sections(session, principal, patient)
    emergency = rules.has_clinical_role(principal) and await access.via_break_glass(
        session, principal, patient.id
    )
    return page(request, "chart.html", patient=patient, sections=sections, emergency=emergency)


def _break_glass_form(
    request: Request, patient_id: int, *, error: str | None, reason: str = ""
) -> HTMLResponse:
    settings = request.app.state.settings
    return page(
        request,
        "break_glass.html",
        status_code=403,
        patient_id=patient_id,
        error=error,
        reason=reason,
        minutes=min(settings.break_glass_minutes, 60),
    )


@router.post("/patients/{patient_id}/break-glass", response_class=HTMLResponse)
async def break_glass(
    request: Request,
    patient_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    reason: Annotated[str, Form(max_length=1000)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Open one patient's record in an emergency: reason plus re-entered password."""
    try:
        await flows.break_the_glass(
            session, principal, patient_id=patient_id, reason=reason, password=password
        )
    except BreakGlassRefused as exc:
        return _break_glass_form(request, patient_id, error=exc.detail, reason=reason)
    return RedirectResponse(f"/patients/{patient_id}", status_code=303)


# ---- the patient's own contact details --------------------------------------------------------------------


def _own_patient_id(principal: Principal) -> int:
    if not rules.is_patient(principal) or principal.patient_id is None:
        raise Forbidden("Only patients edit their own contact details here.")
    return principal.patient_id


def _contact_values(patient: Patient) -> dict[str, Any]:
    return {name: getattr(patient, name) or "" for name in CONTACT_FIELDS}


@router.get("/me/contact", response_class=HTMLResponse)
async def contact_form(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Form to change my phone, email, address and emergency contact."""
    patient = await service.get_patient(session, principal, patient_id=_own_patient_id(principal))
    return page(request, "contact_form.html", values=_contact_values(patient), errors={})


@router.post("/me/contact", response_class=HTMLResponse)
async def contact_save(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Save my contact details (CSRF-checked; validated by the same schema as the API)."""
    patient_id = _own_patient_id(principal)
    form = await request.form()
    values = {name: str(form.get(name, "")).strip() for name in CONTACT_FIELDS}
    # A blank optional field clears it; the home state is required.
    data: dict[str, Any] = {k: (v or None) for k, v in values.items()}
    if data["preferred_language"] is None:
        data["preferred_language"] = "en"
    errors: dict[str, str] = {}
    if data["state"] is None:
        errors["state"] = "Enter your home state (two letters, e.g. PA)."
    update: PatientUpdate | None = None
    try:
        update = PatientUpdate.model_validate(data)
    except ValidationError as exc:
        errors = {**field_errors(exc), **errors}
    if errors or update is None:
        return page(request, "contact_form.html", status_code=422, values=values, errors=errors)
    await service.update_patient(session, principal, patient_id=patient_id, data=update)
    return RedirectResponse("/home?saved=1", status_code=303)


# ---- informatics ------------------------------------------------------------------------------------------


@router.get("/stats", response_class=HTMLResponse)
async def stats(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """Aggregate patient counts by home state (the same figures as /api/v1/stats/patients-by-state)."""
    rows = await service.patients_by_state(session, principal)
    total = sum(n for _, n in rows)
    return page(request, "stats.html", rows=rows, total=total, peak=max((n for _, n in rows), default=0))
