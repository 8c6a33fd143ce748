"""Triage pages: Check symptoms (the patient's self-triage before booking), the chart's Triage section
(a nurse starts a triage, location first), the encounter page (the questions, then the disposition acted
on: emergency instructions, slots offered from scheduling, articles attached, the SBAR note to sign). Thin:
each handler calls triage.service; the slot offer reads scheduling.availability."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import AppError, FieldError, NotAuthenticated, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.geo import US_STATES
from telecare.identity.models import Patient, Role
from telecare.scheduling import availability
from telecare.scheduling import service as scheduling
from telecare.scheduling.models import Modality
from telecare.triage import engine, service
from telecare.triage.models import TriageEncounter, TriageMode, TriageStatus
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
NAV_ITEMS = (
    NavItem(
        "/triage",
        "Check symptoms",
        resource=Resource.TRIAGE,
        action=Action.CREATE,
        roles=frozenset({Role.PATIENT}),
        order=18,
    ),
)
# What each disposition offers from scheduling: the modality and how many days ahead (today counts).
OFFER = {
    "in_person_today": (Modality.IN_PERSON, 1),
    "within_3_days": (None, 3),
    "telehealth": (Modality.VIDEO, 3),
}


def _sorted_protocols(session: AsyncSession) -> list[engine.Protocol]:
    return sorted(service.protocols(session).values(), key=lambda p: p.title)


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    return {
        "encounters": await service.list_encounters(session, principal, patient_id=patient.id),
        "protocols": _sorted_protocols(session),
        "can_triage": principal.role in service.TRIAGERS,
        "states": US_STATES,
        "dispositions": engine.DISPOSITIONS,
    }


CHART_SECTIONS = (
    ChartSection("triage", "Triage", _chart, "triage/chart_section.html", resource=Resource.TRIAGE, order=54),
)


@router.get("/triage", response_class=HTMLResponse)
async def self_triage_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """The patient's Check symptoms page (others: the encounters in their reach)."""
    if principal is None:
        raise NotAuthenticated()
    patient_state = ""
    if access_rules.is_patient(principal) and principal.patient_id is not None:
        found = await session.get(Patient, principal.patient_id)
        patient_state = found.state if found is not None and found.state else ""
    return templates.TemplateResponse(
        request,
        "triage/start.html",
        {
            "principal": principal,
            "protocols": _sorted_protocols(session),
            "states": US_STATES,
            "patient_state": patient_state,
            "encounters": await service.list_encounters(session, principal),
            "dispositions": engine.DISPOSITIONS,
        },
    )


@router.post("/triage/start")
async def start(
    session: DbSession,
    principal: CurrentPrincipal,
    protocol: Annotated[str, Form(max_length=60)],
    location_state: Annotated[str, Form(max_length=2)] = "",
    location_detail: Annotated[str, Form(max_length=500)] = "",
    callback_phone: Annotated[str, Form(max_length=40)] = "",
    patient_id: Annotated[int | None, Form()] = None,
) -> Response:
    target = principal.patient_id if access_rules.is_patient(principal) else patient_id
    if target is None:
        raise ValidationFailed("Choose the patient.", errors=[FieldError("patient_id", "required")])
    row = await service.start_encounter(
        session,
        principal,
        patient_id=target,
        protocol_id=protocol,
        location_state=location_state,
        location_detail=location_detail,
        callback_phone=callback_phone,
    )
    return RedirectResponse(f"/triage/{row.id}", status_code=303)


@dataclass
class SlotOffer:
    visit_type_id: int
    visit_type: str
    slots: list[availability.OfferedSlot]
    message: str | None


async def _offer(session: AsyncSession, principal: Principal, row: TriageEncounter) -> SlotOffer | None:
    """Free slots fitting the disposition, for the state the patient is in (the licensure gate applies)."""
    if row.disposition not in OFFER:
        return None
    modality, days = OFFER[row.disposition]
    try:
        types = await availability.list_visit_types(session, principal)
        fitting = [t for t in types if modality is None or str(modality) in (t.modalities or [])]
        if not fitting:
            return SlotOffer(0, "", [], "No visit type of this kind is set up; call the clinic.")
        vt = next((t for t in fitting if str(t.patient_kind) == "established"), fitting[0])
        search = await availability.find_slots(
            session,
            principal,
            visit_type_id=vt.id,
            state=row.location_state,
            first_day=utc_now().date(),
            days=days,
        )
    except AppError as exc:
        return SlotOffer(0, "", [], exc.detail)
    cutoff = utc_now() + timedelta(days=days)
    slots = [s for s in search.slots if s.start_at <= cutoff][:6]
    return SlotOffer(vt.id, vt.name, slots, search.message)


@router.get("/triage/{encounter_id}", response_class=HTMLResponse)
async def encounter_page(
    encounter_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    row = await service.get_encounter(session, principal, encounter_id=encounter_id)
    return await _render(request, session, principal, row)


async def _render(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    row: TriageEncounter,
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    found = service.protocol(session, row.protocol_id)
    done = row.status == TriageStatus.COMPLETED
    result = engine.evaluate(found, row.answers or {}) if done else None
    zone = await scheduling.org_timezone(session, principal.org_id)
    return templates.TemplateResponse(
        request,
        "triage/encounter.html",
        {
            "principal": principal,
            "row": row,
            "protocol": found,
            "done": done,
            "result": result,
            "emergency": done and row.disposition in engine.EMERGENCY,
            "disposition_text": engine.DISPOSITIONS.get(row.disposition or "", ""),
            "is_patient": access_rules.is_patient(principal),
            "nurse_mode": row.mode == TriageMode.NURSE,
            "can_sign": principal.role in service.TRIAGERS and row.signed_at is None,
            "articles": service.suggested_articles(row.protocol_id, row.disposition or "") if done else [],
            "offer": await _offer(session, principal, row) if done else None,
            "states": US_STATES,
            "errors": errors or {},
            "sbar_parts": service.SBAR_PARTS,
            "tz": zone,
        },
        status_code=status_code,
    )


@router.post("/triage/{encounter_id}", response_class=HTMLResponse)
async def answer(
    encounter_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Save the answers given (radio groups left empty are simply not answered yet)."""
    form = await request.form()
    current = await service.get_encounter(session, principal, encounter_id=encounter_id)
    found = service.protocol(session, current.protocol_id)
    given = {q.id: str(form[q.id]) for q in found.questions if form.get(q.id)}
    await service.save_answers(session, principal, encounter_id=encounter_id, answers=given)
    return RedirectResponse(f"/triage/{encounter_id}", status_code=303)


@router.post("/triage/{encounter_id}/sbar", response_class=HTMLResponse)
async def sign(
    encounter_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    form = await request.form()
    sbar = {k: str(form.get(k, "")) for k in service.SBAR_PARTS}
    await service.sign_sbar(session, principal, encounter_id=encounter_id, sbar=sbar)
    return RedirectResponse(f"/triage/{encounter_id}", status_code=303)
