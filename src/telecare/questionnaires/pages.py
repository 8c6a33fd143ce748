"""Questionnaire pages: My questionnaires (patients), the due list (clinicians), the server-rendered form
(works without JavaScript; a small module saves each answer as it is given), the crisis resources after a
PHQ-9 item-9 answer, and the chart's Questionnaires section with the score trend. Thin: each handler calls
questionnaires.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import FieldError, ValidationFailed
from telecare.core.time import utc_now
from telecare.identity.models import Patient, Role
from telecare.questionnaires import engine, rules, service
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
NAV_ITEMS = (
    NavItem(
        "/questionnaires",
        "Questionnaires",
        resource=Resource.QUESTIONNAIRE_RESPONSE,
        action=Action.SEARCH,
        roles=frozenset({Role.PATIENT, Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST}),
        order=17,
    ),
)


def _trend(data: service.PatientQuestionnaires) -> dict[str, Any]:
    series: dict[str, list[dict[str, Any]]] = {}
    for s in data.scores:
        series.setdefault(s.questionnaire, []).append(
            {"t": s.effective_at.isoformat(), "v": s.value, "band": s.band}
        )
    return {"series": series, "titles": {d.slug: d.title for d in service.definitions()}}


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    data = await service.patient_questionnaires(session, principal, patient_id=patient.id)
    return {"q": data, "trend": _trend(data), "definitions": service.definitions()}


CHART_SECTIONS = (
    ChartSection(
        "questionnaires",
        "Questionnaires and scores",
        _chart,
        "questionnaires/chart_section.html",
        resource=Resource.QUESTIONNAIRE_RESPONSE,
        order=53,
    ),
)


@router.get("/questionnaires", response_class=HTMLResponse)
async def list_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    if access_rules.is_patient(principal) and principal.patient_id is not None:
        data = await service.patient_questionnaires(session, principal, patient_id=principal.patient_id)
        return templates.TemplateResponse(
            request,
            "questionnaires/mine.html",
            {
                "principal": principal,
                "q": data,
                "definitions": service.definitions(),
                "library": engine.library(),
            },
        )
    due = await service.due_list(session, principal, within_days=7)
    return templates.TemplateResponse(
        request, "questionnaires/due.html", {"principal": principal, "due": due}
    )


@router.post("/questionnaires/start")
async def start(
    session: DbSession,
    principal: CurrentPrincipal,
    questionnaire: Annotated[str, Form(max_length=40)],
    patient_id: Annotated[int | None, Form()] = None,
    assignment_id: Annotated[int | None, Form()] = None,
) -> Response:
    target = principal.patient_id if access_rules.is_patient(principal) else patient_id
    if target is None:
        raise ValidationFailed("Choose the patient.", errors=[FieldError("patient_id", "required")])
    row = await service.start_response(
        session, principal, patient_id=target, questionnaire=questionnaire, assignment_id=assignment_id
    )
    return RedirectResponse(f"/questionnaires/responses/{row.id}", status_code=303)


@router.post("/questionnaires/assign")
async def assign(
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int, Form()],
    questionnaire: Annotated[str, Form(max_length=40)],
    every_days: Annotated[str, Form(max_length=4)] = "",
) -> Response:
    try:
        every = int(every_days) if every_days.strip() else None
    except ValueError:
        raise ValidationFailed(
            "Not a number.", errors=[FieldError("every_days", "a number of days")]
        ) from None
    await service.assign(
        session, principal, patient_id=patient_id, questionnaire=questionnaire, every_days=every
    )
    return RedirectResponse(f"/patients/{patient_id}#section-questionnaires", status_code=303)


def _form_answers(definition: engine.Definition, form: Any) -> dict[str, Any]:
    """The answers a form posts: one field per question, named by its linkId (an unchecked box or an
    unanswered radio group posts nothing and leaves the answer as it was)."""
    out: dict[str, Any] = {}
    for item in definition.answerable():
        if item.link_id in form:
            out[item.link_id] = form.get(item.link_id)
    return out


def _page(
    request: Request,
    principal: Principal,
    view: service.ResponseView,
    *,
    errors: list[FieldError] | None = None,
    status_code: int = 200,
) -> Response:
    answers = view.response.answers or {}
    active = {i.link_id for i in engine.active_items(view.definition, answers)}
    return templates.TemplateResponse(
        request,
        "questionnaires/form.html",
        {
            "principal": principal,
            "view": view,
            "answers": answers,
            "active": active,
            "errors": {e.field.removeprefix("answers."): e.message for e in errors or []},
            "is_patient": access_rules.is_patient(principal),
            "band": rules.band(view.response.questionnaire, view.score.value) if view.score else None,
        },
        status_code=status_code,
    )


@router.get("/questionnaires/responses/{response_id}", response_class=HTMLResponse)
async def form_page(
    response_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    view = await service.get_response(session, principal, response_id=response_id)
    return _page(request, principal, view)


@router.post("/questionnaires/responses/{response_id}", response_class=HTMLResponse)
async def form_post(
    response_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Save (and with `action=submit`, submit). Missing answers re-render the form (422) with the answers
    given kept and saved; the crisis resources show whenever item 9 was answered above "not at all"."""
    form = await request.form()
    current = await service.get_response(session, principal, response_id=response_id)
    submit = form.get("action") == "submit"
    result = await service.save_answers(
        session,
        principal,
        response_id=response_id,
        answers=_form_answers(current.definition, form),
        complete=submit,
    )
    view = await service.get_response(session, principal, response_id=response_id)
    if submit and result.missing:
        return _page(request, principal, view, errors=result.missing, status_code=422)
    return RedirectResponse(f"/questionnaires/responses/{response_id}", status_code=303)


@router.post("/questionnaires/responses/{response_id}/autosave")
async def autosave(
    response_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """The form's module posts every change here (form encoding, CSRF header): the answer is saved at once
    and the reply says whether to show the crisis resources now."""
    form = await request.form()
    current = await service.get_response(session, principal, response_id=response_id)
    result = await service.save_answers(
        session, principal, response_id=response_id, answers=_form_answers(current.definition, form)
    )
    return JSONResponse(
        {
            "saved_at": utc_now().isoformat(timespec="seconds"),
            "crisis": result.crisis,
            "active": [i.link_id for i in engine.active_items(current.definition, result.response.answers)],
        }
    )
