"""E-consult pages: the specialist's queue and the requester's list, the request form (with the patient's
verbal consent), the consult page (accept, clarifying questions, answer, decline or withdraw, logged time,
proposed codes), and the chart's E-consults section. Thin: each handler calls econsult.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import AppError
from telecare.econsult import service
from telecare.econsult.models import ConsultOutcome, Urgency
from telecare.identity.models import Patient, Role
from telecare.messaging import service as messaging
from telecare.messaging.api import read_uploads
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
NAV_ITEMS = (
    NavItem(
        "/econsults",
        "E-consults",
        resource=Resource.ECONSULT,
        action=Action.SEARCH,
        roles=frozenset({Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST}),
        order=16,
    ),
)


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    return {"consults": await service.list_consults(session, principal, patient_id=patient.id)}


CHART_SECTIONS = (
    ChartSection(
        "econsults", "E-consults", _chart, "econsult/chart_section.html", resource=Resource.ECONSULT, order=51
    ),
)


async def _tz(session: AsyncSession, principal: Principal) -> Any:
    return (await messaging.org_calendar(session, principal.org_id)).zone


@router.get("/econsults", response_class=HTMLResponse)
async def list_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    queue = await service.list_consults(session, principal, view="queue")
    mine = await service.list_consults(session, principal, view="mine")
    return templates.TemplateResponse(
        request,
        "econsult/list.html",
        {"principal": principal, "queue": queue, "mine": mine, "tz": await _tz(session, principal)},
    )


@router.get("/econsults/new", response_class=HTMLResponse)
async def new_page(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    queues = await service.list_queues(session, principal)
    return templates.TemplateResponse(
        request,
        "econsult/new.html",
        {"principal": principal, "queues": queues, "values": {"patient_id": patient_id or ""}, "errors": {}},
    )


@router.post("/econsults/new", response_class=HTMLResponse)
async def new_send(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int, Form(ge=1)],
    queue_id: Annotated[int, Form(ge=1)],
    question: Annotated[str, Form(max_length=10_000)],
    summary: Annotated[str, Form(max_length=10_000)],
    urgency: Annotated[Urgency, Form()] = Urgency.ROUTINE,
    verbal_consent: Annotated[str, Form(max_length=3)] = "",
    consent_note: Annotated[str, Form(max_length=500)] = "",
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    files: Annotated[list[UploadFile], File()] = [],  # noqa: B006
) -> Response:
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    try:
        async with session.begin_nested():
            consult, _ = await service.request_consult(
                session,
                principal,
                patient_id=patient_id,
                queue_id=queue_id,
                question=question,
                summary=summary,
                urgency=urgency,
                verbal_consent=verbal_consent == "yes",
                consent_note=consent_note,
                uploads=uploads,
                idempotency_key=idempotency_key or None,
            )
    except AppError as exc:
        errors = {e.field: e.message for e in exc.errors} or {"form": exc.detail}
        values = {"patient_id": patient_id, "queue_id": queue_id, "question": question, "summary": summary}
        context = {
            "principal": principal,
            "queues": await service.list_queues(session, principal),
            "values": values,
            "errors": errors,
        }
        return templates.TemplateResponse(request, "econsult/new.html", context, status_code=exc.status_code)
    return RedirectResponse(f"/econsults/{consult.id}", status_code=303)


@router.get("/econsults/{consult_id}", response_class=HTMLResponse)
async def consult_page(
    request: Request, consult_id: int, session: DbSession, principal: CurrentPrincipal
) -> Response:
    view = await service.view_consult(session, principal, consult_id=consult_id)
    codes = await service.proposed_codes(session, principal, consult_id=consult_id)
    return templates.TemplateResponse(
        request,
        "econsult/consult.html",
        {
            "principal": principal,
            "view": view,
            "codes": codes,
            "outcomes": list(ConsultOutcome),
            "tz": await _tz(session, principal),
        },
    )


def _back(consult_id: int) -> Response:
    return RedirectResponse(f"/econsults/{consult_id}", status_code=303)


@router.post("/econsults/{consult_id}/accept")
async def accept(consult_id: int, session: DbSession, principal: CurrentPrincipal) -> Response:
    await service.accept_consult(session, principal, consult_id=consult_id)
    return _back(consult_id)


@router.post("/econsults/{consult_id}/note")
async def note(
    consult_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    body: Annotated[str, Form(max_length=10_000)],
) -> Response:
    await service.add_note(session, principal, consult_id=consult_id, body=body)
    return _back(consult_id)


@router.post("/econsults/{consult_id}/answer")
async def answer(
    consult_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    outcome: Annotated[ConsultOutcome, Form()],
    assessment: Annotated[str, Form(max_length=10_000)],
    recommendations: Annotated[str, Form(max_length=10_000)],
    verbal_discussion: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    await service.answer_consult(
        session,
        principal,
        consult_id=consult_id,
        outcome=outcome,
        assessment=assessment,
        recommendations=recommendations,
        verbal_discussion=verbal_discussion == "yes",
    )
    return _back(consult_id)


@router.post("/econsults/{consult_id}/close")
async def close(
    consult_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    reason: Annotated[str, Form(max_length=500)],
    decline: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    await service.close_consult(
        session, principal, consult_id=consult_id, reason=reason, decline=decline == "yes"
    )
    return _back(consult_id)


@router.post("/econsults/{consult_id}/time")
async def log_time(
    consult_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    minutes: Annotated[int, Form(ge=1, le=240)],
    verbal: Annotated[str, Form(max_length=3)] = "",
    activity: Annotated[str, Form(max_length=200)] = "review",
) -> Response:
    await service.log_time(
        session, principal, consult_id=consult_id, minutes=minutes, verbal=verbal == "yes", activity=activity
    )
    return _back(consult_id)
