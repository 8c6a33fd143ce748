"""Home pages and the patient chart shell."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from telecare.access import flows
from telecare.access.service import PatientNotAccessible
from telecare.core.auth import CurrentPrincipal, DbSession
from telecare.core.errors import Forbidden
from telecare.identity import service
from telecare.web.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/home", response_class=HTMLResponse)
async def home(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    q: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    if principal.role == "patient":
        patient = None
        if principal.patient_id is not None:
            patient = await service.get_patient(session, principal, patient_id=principal.patient_id)
        team = await service.care_team(session, principal, patient_id=patient.id) if patient else []
        return templates.TemplateResponse(
            request, "home_patient.html", {"principal": principal, "patient": patient, "team": team}
        )
    patients: list[object] = []
    total = 0
    can_list = True
    try:
        patients, total = await service.search_patients(session, principal, name=q, limit=100)  # type: ignore[assignment]
    except Forbidden:
        can_list = False
    return templates.TemplateResponse(
        request,
        "home_staff.html",
        {"principal": principal, "patients": patients, "total": total, "q": q or "", "can_list": can_list},
    )


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def chart(
    request: Request, patient_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    try:
        patient = await service.get_patient(session, principal, patient_id=patient_id)
    except PatientNotAccessible:
        if principal.role.is_clinician:
            return templates.TemplateResponse(
                request,
                "break_glass.html",
                {"principal": principal, "patient_id": patient_id, "error": None},
                status_code=403,
            )
        raise
    team = await service.care_team(session, principal, patient_id=patient_id)
    return templates.TemplateResponse(
        request, "chart.html", {"principal": principal, "patient": patient, "team": team}
    )


@router.post("/patients/{patient_id}/break-glass", response_class=HTMLResponse)
async def break_glass(
    request: Request,
    patient_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    reason: Annotated[str, Form(max_length=1000)],
    password: Annotated[str, Form(max_length=256)],
) -> Response:
    await flows.break_the_glass(session, principal, patient_id=patient_id, reason=reason, password=password)
    return RedirectResponse(f"/patients/{patient_id}", status_code=303)
