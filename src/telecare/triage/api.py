"""REST routes for teletriage (thin: each calls one action in triage.service): the protocols (product
content), starting an encounter with the patient's location, answering, signing the SBAR note, reading and
listing encounters (docs/triage.md#api)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.errors import NotAuthenticated
from telecare.core.params import BoundedId, PathId, QueryId
from telecare.triage import engine, service

router = APIRouter(prefix="/api/v1/triage", tags=["triage"])


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: BoundedId
    protocol: str = Field(min_length=1, max_length=60)
    location_state: str = Field(default="", max_length=2)
    location_detail: str = Field(default="", max_length=500)
    callback_phone: str = Field(default="", max_length=40)


class AnswersBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answers: Annotated[dict[str, Annotated[str, Field(max_length=40)]], Field(max_length=100)]


class SbarBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    situation: str | None = Field(default=None, max_length=service.SBAR_MAX)
    background: str | None = Field(default=None, max_length=service.SBAR_MAX)
    assessment: str | None = Field(default=None, max_length=service.SBAR_MAX)
    recommendation: str | None = Field(default=None, max_length=service.SBAR_MAX)


def _protocol(p: engine.Protocol, *, questions: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": p.id,
        "title": p.title,
        "version": p.version,
        "author": p.author,
        "review_date": p.review_date.isoformat(),
        "label": p.label,
        "sources": list(p.sources),
    }
    if questions:
        out["questions"] = [
            {"id": q.id, "text": q.text, "answers": [{"id": a.id, "text": a.text} for a in q.answers]}
            for q in p.questions
        ]
    return out


@router.get("/protocols")
async def list_protocols(
    request: Request, session: DbSession, principal: CurrentPrincipal
) -> list[dict[str, Any]]:
    if principal is None:
        raise NotAuthenticated()
    return [_protocol(p) for p in sorted(service.protocols(session).values(), key=lambda p: p.title)]


@router.get("/protocols/{protocol_id}")
async def get_protocol(
    protocol_id: Annotated[str, Path(max_length=60)], session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    if principal is None:
        raise NotAuthenticated()
    return _protocol(service.protocol(session, protocol_id), questions=True)


@router.post("/encounters", status_code=201)
async def start(body: StartBody, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    row = await service.start_encounter(
        session,
        principal,
        patient_id=body.patient_id,
        protocol_id=body.protocol,
        location_state=body.location_state,
        location_detail=body.location_detail,
        callback_phone=body.callback_phone,
    )
    return service.encounter_json(row)


@router.post("/encounters/{encounter_id}/answers")
async def answer(
    encounter_id: PathId, body: AnswersBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Save answers; the reply carries the disposition so far, `emergency` once an emergency disposition is
    reached (the encounter is then complete), the questions still `missing`, and the articles suggested."""
    result = await service.save_answers(
        session, principal, encounter_id=encounter_id, answers=dict(body.answers)
    )
    return {
        **service.encounter_json(result.encounter),
        "missing": result.missing,
        "articles": [a.slug for a in result.articles],
    }


@router.post("/encounters/{encounter_id}/sbar")
async def sign(
    encounter_id: PathId, body: SbarBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """Edit (any part given replaces the draft's) and sign the SBAR note."""
    row = await service.sign_sbar(
        session,
        principal,
        encounter_id=encounter_id,
        sbar={k: v for k, v in body.model_dump().items() if v is not None},
    )
    return service.encounter_json(row)


@router.get("/encounters")
async def list_encounters(
    session: DbSession, principal: CurrentPrincipal, patient_id: QueryId | None = None
) -> list[dict[str, Any]]:
    rows = await service.list_encounters(session, principal, patient_id=patient_id)
    return [service.encounter_json(r) for r in rows]


@router.get("/encounters/{encounter_id}")
async def get_encounter(
    encounter_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    return service.encounter_json(await service.get_encounter(session, principal, encounter_id=encounter_id))
