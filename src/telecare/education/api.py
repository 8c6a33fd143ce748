"""REST routes for patient education (thin: each calls one action in education.service): the article
library (project content; any signed-in caller), assigning an article to a patient, listing and reading
assignments (docs/education.md#api)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.errors import NotAuthenticated
from telecare.core.params import PathId, QueryId
from telecare.education import service
from telecare.education.library import Article

router = APIRouter(prefix="/api/v1", tags=["education"])


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    article: str = Field(min_length=1, max_length=80)
    note: str = Field(default="", max_length=service.NOTE_MAX)


def _article(a: Article, *, body: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "slug": a.slug,
        "title": a.title,
        "summary": a.summary,
        "topics": list(a.topics),
        "dispositions": list(a.dispositions),
        "reviewed": a.reviewed.isoformat(),
        "sources": [{"title": s.title, "url": s.url} for s in a.sources],
    }
    if body:
        out["body_markdown"] = a.body
    return out


@router.get("/education/articles")
async def list_articles(
    principal: CurrentPrincipal,
    topic: Annotated[str | None, Query(max_length=40)] = None,
    disposition: Annotated[str | None, Query(max_length=40)] = None,
) -> list[dict[str, Any]]:
    """The library (not patient data), optionally by topic or triage disposition."""
    if principal is None:
        raise NotAuthenticated()
    return [_article(a) for a in service.articles(topic=topic, disposition=disposition)]


@router.get("/education/articles/{slug}")
async def get_article(
    slug: Annotated[str, Path(max_length=80)], principal: CurrentPrincipal
) -> dict[str, Any]:
    if principal is None:
        raise NotAuthenticated()
    return _article(service.article(slug), body=True)


@router.post("/patients/{patient_id}/education", status_code=201)
async def assign(
    patient_id: PathId, body: AssignBody, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Give the patient an article: 201 with the new assignment, or 200 with the existing one when the
    patient already has that article (nothing is added twice)."""
    row, created = await service.assign_article(
        session, principal, patient_id=patient_id, slug=body.article, note=body.note
    )
    return JSONResponse(service.assignment_json(row), status_code=201 if created else 200)


@router.get("/education/assignments")
async def list_assignments(
    session: DbSession, principal: CurrentPrincipal, patient_id: QueryId | None = None
) -> list[dict[str, Any]]:
    rows = await service.list_assignments(session, principal, patient_id=patient_id)
    return [service.assignment_json(r) for r in rows]


@router.get("/education/assignments/{assignment_id}")
async def read_assignment(
    assignment_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The assignment with its article and the record of the patient's reading."""
    return _view(await service.read_assignment(session, principal, assignment_id=assignment_id))


@router.post("/education/assignments/{assignment_id}/read")
async def record_reading(
    assignment_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """The patient records that they opened the article (the portal does this when they open it)."""
    return _view(await service.record_reading(session, principal, assignment_id=assignment_id))


def _view(view: service.AssignmentView) -> dict[str, Any]:
    return {
        **service.assignment_json(view.assignment),
        "article_detail": _article(view.article, body=True) if view.article else None,
    }
