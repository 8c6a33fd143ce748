"""Dermatology pages: the patient's skin concerns and the dermatologist's queue (`/skin`), the submission form
with phone-camera photo inputs (`/skin/new`), the case viewer with zoom and side-by-side comparison against
earlier photos of the same site, the answer form and the answer shown to the patient (`/skin/{id}`), and the
chart's Skin concerns section. Thin: each handler calls dermatology.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import AppError
from telecare.core.params import PathId
from telecare.dermatology import service
from telecare.dermatology.api import read_photos
from telecare.dermatology.models import BodySite, SkinOutcome
from telecare.identity.models import Patient, Role
from telecare.messaging import service as messaging
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
NAV_ITEMS = (
    NavItem(
        "/skin",
        "Skin concerns",
        resource=Resource.SKIN_CASE,
        action=Action.SEARCH,
        roles=frozenset({Role.PATIENT, Role.PHYSICIAN, Role.NURSE}),
        order=17,
    ),
)
Photo = Annotated[UploadFile | None, File()]
Extras = Annotated[list[UploadFile], File()]
SITE_LABELS = {b.value: b.value.replace("_", " ").capitalize() for b in BodySite}
OUTCOME_LABELS = {
    SkinOutcome.ASSESSMENT_PLAN.value: "Assessment and plan",
    SkinOutcome.MORE_PHOTOS.value: "Ask for more photos",
    SkinOutcome.VIDEO_VISIT.value: "Convert to a video visit",
    SkinOutcome.IN_PERSON_VISIT.value: "Convert to an in-person visit",
}


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    return {
        "cases": await service.list_cases(session, principal, patient_id=patient.id),
        "sites": SITE_LABELS,
    }


CHART_SECTIONS = (
    ChartSection(
        "skin",
        "Skin concerns",
        _chart,
        "dermatology/chart_section.html",
        resource=Resource.SKIN_CASE,
        order=52,
    ),
)


async def _tz(session: AsyncSession, principal: Principal) -> Any:
    return (await messaging.org_calendar(session, principal.org_id)).zone


@router.get("/skin", response_class=HTMLResponse)
async def list_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    """A patient's skin concerns; for clinicians the dermatology queue and the cases they submitted."""
    is_patient = access_rules.is_patient(principal)
    queue = [] if is_patient else await service.list_cases(session, principal, view="queue")
    mine = await service.list_cases(session, principal, view="mine")
    return templates.TemplateResponse(
        request,
        "dermatology/list.html",
        {
            "principal": principal,
            "is_patient": is_patient,
            "is_dermatologist": await service.is_dermatologist(session, principal),
            "queue": queue,
            "mine": mine,
            "sites": SITE_LABELS,
            "tz": await _tz(session, principal),
        },
    )


def _form_context(principal: Principal, **extra: Any) -> dict[str, Any]:
    return {
        "principal": principal,
        "is_patient": access_rules.is_patient(principal),
        "sites": SITE_LABELS,
        "values": {},
        "errors": {},
        "min_edge": service.MIN_SHORT_EDGE,
        **extra,
    }


@router.get("/skin/new", response_class=HTMLResponse)
async def new_page(
    request: Request,
    principal: CurrentPrincipal,
    patient_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    return templates.TemplateResponse(
        request, "dermatology/new.html", _form_context(principal, values={"patient_id": patient_id or ""})
    )


@router.post("/skin/new", response_class=HTMLResponse)
async def new_send(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    body_site: Annotated[str, Form(max_length=20)] = "",
    duration: Annotated[str, Form(max_length=200)] = "",
    changing: Annotated[str, Form(max_length=3)] = "",
    symptoms: Annotated[str, Form(max_length=4_000)] = "",
    prior_treatment: Annotated[str, Form(max_length=4_000)] = "",
    patient_id: Annotated[str, Form(max_length=12)] = "",
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    close_up: Photo = None,
    context: Photo = None,
    extra: Extras = [],  # noqa: B006
) -> Response:
    photos = await read_photos(session.settings.max_upload_bytes, close_up, context, extra)
    values = {
        "patient_id": patient_id,
        "body_site": body_site,
        "duration": duration,
        "changing": changing == "yes",
        "symptoms": symptoms,
        "prior_treatment": prior_treatment,
    }
    try:
        async with session.begin_nested():
            case, _ = await service.submit_case(
                session,
                principal,
                patient_id=int(patient_id) if patient_id.strip().isdigit() else None,
                body_site=body_site,
                duration=duration,
                changing=changing == "yes",
                symptoms=symptoms,
                prior_treatment=prior_treatment,
                photos=photos,
                idempotency_key=idempotency_key or None,
            )
    except AppError as exc:
        errors = {e.field: e.message for e in exc.errors} or {"form": exc.detail}
        context_ = _form_context(principal, values=values, errors=errors)
        return templates.TemplateResponse(
            request, "dermatology/new.html", context_, status_code=exc.status_code
        )
    return RedirectResponse(f"/skin/{case.id}?sent=1", status_code=303)


@router.get("/skin/{case_id}", response_class=HTMLResponse)
async def case_page(
    request: Request,
    case_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    sent: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    """The viewer: photos large (zoom with a click or the keyboard), side by side with earlier photos of the
    same site; the answer form for dermatologists; the answer for the patient."""
    view = await service.view_case(session, principal, case_id=case_id)
    return templates.TemplateResponse(
        request,
        "dermatology/case.html",
        {
            "principal": principal,
            "view": view,
            "sent": bool(sent),
            "sites": SITE_LABELS,
            "outcomes": OUTCOME_LABELS,
            "tz": await _tz(session, principal),
        },
    )


def _back(case_id: int) -> Response:
    return RedirectResponse(f"/skin/{case_id}", status_code=303)


@router.post("/skin/{case_id}/photos")
async def add_photos(
    case_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    close_up: Photo = None,
    context: Photo = None,
    extra: Extras = [],  # noqa: B006
) -> Response:
    photos = await read_photos(session.settings.max_upload_bytes, close_up, context, extra)
    await service.add_photos(session, principal, case_id=case_id, photos=photos)
    return _back(case_id)


@router.post("/skin/{case_id}/review")
async def review(case_id: PathId, session: DbSession, principal: CurrentPrincipal) -> Response:
    await service.start_review(session, principal, case_id=case_id)
    return _back(case_id)


@router.post("/skin/{case_id}/answer")
async def answer(
    case_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    outcome: Annotated[SkinOutcome, Form()],
    assessment: Annotated[str, Form(max_length=4_000)] = "",
    plan: Annotated[str, Form(max_length=4_000)] = "",
) -> Response:
    await service.answer_case(
        session, principal, case_id=case_id, outcome=outcome, assessment=assessment, plan=plan
    )
    return _back(case_id)
