"""REST routes for questionnaires (thin: each calls one action in questionnaires.service). Definitions and
responses are served as FHIR R4 Questionnaire and QuestionnaireResponse JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.errors import NotAuthenticated, render_error
from telecare.core.params import BoundedId, PathId, QueryId
from telecare.questionnaires import service
from telecare.questionnaires.models import QuestionnaireAssignment, QuestionnaireScore

router = APIRouter(prefix="/api/v1/questionnaires", tags=["questionnaires"])

Answer = str | int | float | bool | None


class AssignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: BoundedId
    questionnaire: str = Field(min_length=1, max_length=40)
    every_days: int | None = Field(default=None, ge=1, le=365)
    first_due: datetime | None = None


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: BoundedId
    questionnaire: str = Field(min_length=1, max_length=40)
    assignment_id: BoundedId | None = None


class AnswersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: Annotated[dict[str, Answer], Field(max_length=200)] = Field(default_factory=dict)
    complete: bool = False


def _assignment(a: QuestionnaireAssignment, overdue: bool | None = None) -> dict[str, Any]:
    return {
        "id": a.id,
        "patient_id": a.patient_id,
        "questionnaire": a.questionnaire,
        "every_days": a.every_days,
        "due_at": a.due_at.isoformat(),
        "active": a.active,
        "assigned_by_user_id": a.assigned_by_user_id,
        "last_completed_at": a.last_completed_at.isoformat() if a.last_completed_at else None,
        **({"overdue": overdue} if overdue is not None else {}),
    }


def _score(s: QuestionnaireScore) -> dict[str, Any]:
    return {
        "id": s.id,
        "patient_id": s.patient_id,
        "response_id": s.response_id,
        "questionnaire": s.questionnaire,
        "loinc": s.loinc,
        "value": s.value,
        "band": s.band,
        "effective_at": s.effective_at.isoformat(),
        "observation": service.score_fhir(s),
    }


def _saved(result: service.SaveResult) -> dict[str, Any]:
    r = result.response
    return {
        "id": r.id,
        "patient_id": r.patient_id,
        "questionnaire": r.questionnaire,
        "status": str(r.status),
        "answers": r.answers,
        "crisis": result.crisis,
        "missing": [e.field for e in result.missing],
        "score": _score(result.score) if result.score else None,
    }


@router.get("")
async def list_definitions(principal: CurrentPrincipal) -> list[dict[str, Any]]:
    """The questionnaires this server runs (product content, not patient data)."""
    if principal is None:
        raise NotAuthenticated()
    return [
        {"id": d.slug, "title": d.title, "version": d.version, "code": d.panel_code}
        for d in service.definitions()
    ]


@router.get("/definitions/{slug}")
async def get_definition(slug: str, principal: CurrentPrincipal) -> dict[str, Any]:
    """A FHIR R4 Questionnaire."""
    if principal is None:
        raise NotAuthenticated()
    return service.definition(slug).resource


@router.post("/assignments", status_code=201)
async def assign(body: AssignBody, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    row = await service.assign(
        session,
        principal,
        patient_id=body.patient_id,
        questionnaire=body.questionnaire,
        every_days=body.every_days,
        first_due=body.first_due,
    )
    return _assignment(row)


@router.get("/assignments/due")
async def due(session: DbSession, principal: CurrentPrincipal, within_days: int = 0) -> list[dict[str, Any]]:
    rows = await service.due_list(session, principal, within_days=max(0, min(within_days, 60)))
    return [{**_assignment(d.assignment, d.overdue), "patient_name": d.patient_name} for d in rows]


@router.post("/assignments/{assignment_id}/end")
async def end(assignment_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    await service.end_assignment(session, principal, assignment_id=assignment_id)
    return {"id": assignment_id, "active": False}


@router.get("/patients/{patient_id}")
async def patient_summary(
    patient_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    data = await service.patient_questionnaires(session, principal, patient_id=patient_id)
    return {
        "patient_id": patient_id,
        "due": [_assignment(d.assignment, d.overdue) for d in data.due],
        "responses": [
            {
                "id": r.id,
                "questionnaire": r.questionnaire,
                "status": str(r.status),
                "started_at": r.started_at.isoformat(),
                "completed_at": r.completed_at.isoformat() if r.completed_at else None,
                "crisis": r.crisis_at is not None,
            }
            for r in (*data.in_progress, *data.completed)
        ],
        "scores": [_score(s) for s in data.scores],
    }


@router.post("/responses", status_code=201)
async def start(body: StartBody, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    row = await service.start_response(
        session,
        principal,
        patient_id=body.patient_id,
        questionnaire=body.questionnaire,
        assignment_id=body.assignment_id,
    )
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "questionnaire": row.questionnaire,
        "status": str(row.status),
    }


@router.get("/responses")
async def search_responses(
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: QueryId | None = None,
    status: Annotated[str | None, Query(max_length=12)] = None,
) -> list[dict[str, Any]]:
    rows = await service.search_responses(session, principal, patient_id=patient_id, status=status)
    return [
        {
            "id": r.id,
            "patient_id": r.patient_id,
            "questionnaire": r.questionnaire,
            "status": str(r.status),
            "started_at": r.started_at.isoformat(),
            "completed_at": r.completed_at.isoformat() if r.completed_at else None,
            "crisis": r.crisis_at is not None,
        }
        for r in rows
    ]


@router.post("/responses/{response_id}/answers")
async def answer(
    response_id: PathId, body: AnswersBody, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    """Save answers as they are given. A submit (`complete`) with required questions unanswered keeps what
    was given and answers 422 naming each missing `answers.<linkId>`, with `crisis` in the body."""
    result = await service.save_answers(
        session, principal, response_id=response_id, answers=dict(body.answers), complete=body.complete
    )
    if body.complete and result.missing:
        return render_error(
            request,
            422,
            "questionnaire_incomplete",
            "Questions need an answer",
            "The answers given are saved; answer the questions listed to submit.",
            result.missing,
            extra={"crisis": result.crisis, "saved": True, "id": result.response.id},
        )
    return JSONResponse(_saved(result))


@router.get("/responses/{response_id}")
async def get_response(
    response_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """A FHIR R4 QuestionnaireResponse: every answered item, in the definition's order."""
    return service.to_fhir(await service.get_response(session, principal, response_id=response_id))


@router.get("/responses/{response_id}/score")
async def get_score(response_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    """The derived total (FHIR Observation, derivedFrom the response); 404 until the response is complete."""
    view = await service.get_response(session, principal, response_id=response_id)
    if view.score is None:
        raise service.ResponseNotFound("No score yet: the questionnaire is not complete.")
    return _score(view.score)
