"""Education pages: Reading (a patient's assigned articles and the library), one article, one assigned
article (the patient's reading is recorded), and the chart's Education section where clinicians give
articles and see what was read. Thin: each handler calls education.service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.errors import NotAuthenticated
from telecare.education import service
from telecare.education.library import TOPIC_LABELS, TOPICS, library
from telecare.identity.models import Patient, Role
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
NAV_ITEMS = (
    NavItem(
        "/education",
        "Reading",
        resource=Resource.EDUCATION,
        action=Action.SEARCH,
        roles=frozenset({Role.PATIENT}),
        order=19,
    ),
)


def _by_topic() -> list[tuple[str, list[Any]]]:
    groups = [(TOPIC_LABELS[t], service.articles(topic=t)) for t in TOPICS]
    return [(label, items) for label, items in groups if items]


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    rows = await service.list_assignments(session, principal, patient_id=patient.id)
    return {"assignments": rows, "library": library(), "by_topic": _by_topic()}


CHART_SECTIONS = (
    ChartSection(
        "education",
        "Education",
        _chart,
        "education/chart_section.html",
        resource=Resource.EDUCATION,
        order=55,
    ),
)


@router.get("/education", response_class=HTMLResponse)
async def reading_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    if principal is None:
        raise NotAuthenticated()
    mine = (
        await service.list_assignments(session, principal)
        if access_rules.is_patient(principal) and principal.patient_id is not None
        else None
    )
    return templates.TemplateResponse(
        request,
        "education/mine.html",
        {"principal": principal, "mine": mine, "library": library(), "by_topic": _by_topic()},
    )


@router.get("/education/articles/{slug}", response_class=HTMLResponse)
async def article_page(slug: str, request: Request, principal: CurrentPrincipal) -> Response:
    if principal is None:
        raise NotAuthenticated()
    return templates.TemplateResponse(
        request,
        "education/article.html",
        {"principal": principal, "article": service.article(slug), "assignment": None},
    )


@router.get("/education/assignments/{assignment_id}", response_class=HTMLResponse)
async def assignment_page(
    assignment_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    view = await service.read_assignment(session, principal, assignment_id=assignment_id)
    return templates.TemplateResponse(
        request,
        "education/article.html",
        {"principal": principal, "article": view.article, "assignment": view.assignment},
    )


@router.post("/education/assignments/{assignment_id}/open")
async def open_assignment(assignment_id: int, session: DbSession, principal: CurrentPrincipal) -> Response:
    """The patient's Read button: record the reading, then show the article (post, redirect, get)."""
    await service.record_reading(session, principal, assignment_id=assignment_id)
    return RedirectResponse(f"/education/assignments/{assignment_id}", status_code=303)


@router.post("/education/assign")
async def assign(
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int, Form()],
    article: Annotated[str, Form(max_length=80)],
    note: Annotated[str, Form(max_length=service.NOTE_MAX)] = "",
) -> Response:
    await service.assign_article(session, principal, patient_id=patient_id, slug=article, note=note)
    return RedirectResponse(f"/patients/{patient_id}#section-education", status_code=303)
