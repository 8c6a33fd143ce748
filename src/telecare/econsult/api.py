"""REST routes for e-consults (thin: each calls one action in econsult.service).

A request is `multipart/form-data` (its fields and up to five `files`: a summary letter, results, images)
and honours an `Idempotency-Key` header."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.params import BoundedId, PathId, QueryId
from telecare.core.time import utc_now
from telecare.econsult import service
from telecare.econsult.models import Consult, ConsultOutcome, ConsultQueue, Urgency
from telecare.messaging.api import attachment_read, read_uploads
from telecare.messaging.schemas import AttachmentRead

router = APIRouter(prefix="/api/v1/econsult", tags=["e-consults"])


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    specialty: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=120)
    routine_business_days: int = Field(default=3, ge=1, le=10)
    org_id: BoundedId | None = None


class QueueRead(BaseModel):
    id: int
    specialty: str
    name: str
    routine_business_days: int


class MemberAdd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: BoundedId


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=10_000)


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: ConsultOutcome
    assessment: str = Field(min_length=1, max_length=10_000)
    recommendations: str = Field(min_length=1, max_length=10_000)
    verbal_discussion: bool = Field(default=False, description="The specialist and requester also spoke")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class TimeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minutes: int = Field(ge=1, le=240)
    verbal: bool = False
    activity: str = Field(default="review", max_length=200)


class NoteRead(BaseModel):
    id: int
    author_user_id: int
    author_name: str
    from_specialist: bool
    body: str
    created_at: datetime


class ConsultRead(BaseModel):
    id: int
    patient_id: int
    queue_id: int
    queue_name: str
    requester_user_id: int
    question: str
    summary: str
    urgency: str
    status: str
    consent_at: datetime
    requested_at: datetime
    due_at: datetime
    accepted_at: datetime | None
    specialist_user_id: int | None
    answered_at: datetime | None
    answered_by_user_id: int | None
    outcome: str | None
    assessment: str | None
    recommendations: str | None
    verbal_discussion: bool
    closed_reason: str | None
    notes: list[NoteRead] = []
    attachments: list[AttachmentRead] = []


class ConsultSummary(BaseModel):
    id: int
    patient_id: int
    queue_id: int
    queue_name: str
    question: str
    urgency: str
    status: str
    requester_user_id: int
    specialist_user_id: int | None
    requested_at: datetime
    due_at: datetime
    answered_at: datetime | None
    overdue: bool
    turnaround_hours: float | None


class CodeRead(BaseModel):
    code: str | None
    minutes: int
    final: bool
    reasons: list[str]


class ProposalRead(BaseModel):
    consultant: CodeRead
    requester: CodeRead


def _queue_read(q: ConsultQueue) -> QueueRead:
    return QueueRead(
        id=q.id, specialty=q.specialty, name=q.name, routine_business_days=q.routine_business_days
    )


def _consult_read(c: Consult, queue_name: str, view: service.ConsultView | None = None) -> ConsultRead:
    names = view.names if view is not None else {}
    return ConsultRead(
        id=c.id,
        patient_id=c.patient_id,
        queue_id=c.queue_id,
        queue_name=queue_name,
        requester_user_id=c.requester_user_id,
        question=c.question,
        summary=c.summary,
        urgency=str(c.urgency),
        status=str(c.status),
        consent_at=c.consent_at,
        requested_at=c.requested_at,
        due_at=c.due_at,
        accepted_at=c.accepted_at,
        specialist_user_id=c.specialist_user_id,
        answered_at=c.answered_at,
        answered_by_user_id=c.answered_by_user_id,
        outcome=str(c.outcome) if c.outcome else None,
        assessment=c.assessment,
        recommendations=c.recommendations,
        verbal_discussion=c.verbal_discussion,
        closed_reason=c.closed_reason,
        notes=[
            NoteRead(
                id=n.id,
                author_user_id=n.author_user_id,
                author_name=names.get(n.author_user_id, ""),
                from_specialist=n.from_specialist,
                body=n.body,
                created_at=n.created_at,
            )
            for n in (view.notes if view else [])
        ],
        attachments=[attachment_read(f) for f in (view.attachments if view else [])],
    )


async def _read(session: Any, principal: Any, consult: Consult) -> ConsultRead:
    queue = await service.get_queue(session, principal, queue_id=consult.queue_id)
    return _consult_read(consult, queue.name)


@router.get("/queues", response_model=list[QueueRead])
async def queues(session: DbSession, principal: CurrentPrincipal) -> list[QueueRead]:
    return [_queue_read(q) for q in await service.list_queues(session, principal)]


@router.get("/queues/{queue_id}", response_model=QueueRead)
async def queue(queue_id: PathId, session: DbSession, principal: CurrentPrincipal) -> QueueRead:
    return _queue_read(await service.get_queue(session, principal, queue_id=queue_id))


@router.post("/queues", response_model=QueueRead, status_code=201)
async def create_queue(body: QueueCreate, session: DbSession, principal: CurrentPrincipal) -> QueueRead:
    """Coordinators and admins open a specialty's queue with its routine turnaround (business days)."""
    return _queue_read(await service.create_queue(session, principal, **body.model_dump()))


@router.post("/queues/{queue_id}/members", status_code=204)
async def add_member(
    queue_id: PathId, body: MemberAdd, session: DbSession, principal: CurrentPrincipal
) -> Response:
    await service.add_queue_member(session, principal, queue_id=queue_id, user_id=body.user_id)
    return Response(status_code=204)


@router.get("/consults", response_model=list[ConsultSummary])
async def consults(
    session: DbSession,
    principal: CurrentPrincipal,
    view: Annotated[str, Query(pattern="^(queue|mine)$")] = "queue",
    patient_id: QueryId | None = None,
    include_closed: bool = False,
) -> list[ConsultSummary]:
    """`queue`: open consults of the caller's specialty queues, most urgent and soonest due first; `mine`:
    the caller's requests; `patient_id`: that patient's consults."""
    rows = await service.list_consults(
        session, principal, view=view, patient_id=patient_id, include_closed=include_closed
    )
    return [
        ConsultSummary(**{k: v for k, v in r.__dict__.items() if k in ConsultSummary.model_fields})
        for r in rows
    ]


@router.post("/consults", response_model=ConsultRead, status_code=201)
async def request_consult(
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int, Form(ge=1)],
    queue_id: Annotated[int, Form(ge=1)],
    question: Annotated[str, Form(max_length=10_000)],
    summary: Annotated[str, Form(max_length=10_000)],
    verbal_consent: Annotated[bool, Form(description="The patient agreed, verbally, to the e-consult")],
    urgency: Annotated[Urgency, Form()] = Urgency.ROUTINE,
    consent_note: Annotated[str, Form(max_length=500)] = "",
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
    files: Annotated[list[UploadFile], File()] = [],  # noqa: B006
) -> Response:
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    consult, created = await service.request_consult(
        session,
        principal,
        patient_id=patient_id,
        queue_id=queue_id,
        question=question,
        summary=summary,
        urgency=urgency,
        verbal_consent=verbal_consent,
        consent_note=consent_note,
        uploads=uploads,
        idempotency_key=idempotency_key,
    )
    body = await _read(session, principal, consult)
    return JSONResponse(body.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/consults/{consult_id}", response_model=ConsultRead)
async def consult(consult_id: PathId, session: DbSession, principal: CurrentPrincipal) -> ConsultRead:
    view = await service.view_consult(session, principal, consult_id=consult_id)
    return _consult_read(view.consult, view.queue.name, view)


@router.post("/consults/{consult_id}/accept", response_model=ConsultRead)
async def accept(consult_id: PathId, session: DbSession, principal: CurrentPrincipal) -> ConsultRead:
    """A specialist of the queue takes the consult."""
    return await _read(
        session, principal, await service.accept_consult(session, principal, consult_id=consult_id)
    )


@router.post("/consults/{consult_id}/notes", status_code=201)
async def note(
    consult_id: PathId, body: NoteBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    """A clarifying question (specialist; puts the consult on hold) or its answer (requester)."""
    n = await service.add_note(session, principal, consult_id=consult_id, body=body.body)
    return {"id": n.id, "consult_id": consult_id, "from_specialist": n.from_specialist}


@router.post("/consults/{consult_id}/answer", response_model=ConsultRead)
async def answer(
    consult_id: PathId, body: AnswerBody, session: DbSession, principal: CurrentPrincipal
) -> ConsultRead:
    c = await service.answer_consult(session, principal, consult_id=consult_id, **body.model_dump())
    return await _read(session, principal, c)


@router.post("/consults/{consult_id}/decline", response_model=ConsultRead)
async def decline(
    consult_id: PathId, body: ReasonBody, session: DbSession, principal: CurrentPrincipal
) -> ConsultRead:
    c = await service.close_consult(
        session, principal, consult_id=consult_id, reason=body.reason, decline=True
    )
    return await _read(session, principal, c)


@router.post("/consults/{consult_id}/cancel", response_model=ConsultRead)
async def cancel(
    consult_id: PathId, body: ReasonBody, session: DbSession, principal: CurrentPrincipal
) -> ConsultRead:
    c = await service.close_consult(
        session, principal, consult_id=consult_id, reason=body.reason, decline=False
    )
    return await _read(session, principal, c)


@router.post("/consults/{consult_id}/time", status_code=201)
async def log_time(
    consult_id: PathId, body: TimeBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    e = await service.log_time(session, principal, consult_id=consult_id, **body.model_dump())
    return {"id": e.id, "consult_id": consult_id, "side": e.side, "minutes": e.minutes}


@router.get("/consults/{consult_id}/billing", response_model=ProposalRead)
async def billing(consult_id: PathId, session: DbSession, principal: CurrentPrincipal) -> ProposalRead:
    """99446-99449 or 99451 for the specialist and 99452 for the requester, with the facts behind them."""
    p = await service.proposed_codes(session, principal, consult_id=consult_id)

    def code(c: Any) -> CodeRead:
        return CodeRead(code=c.code, minutes=c.minutes, final=c.final, reasons=list(c.reasons))

    return ProposalRead(consultant=code(p.consultant), requester=code(p.requester))


@router.get("/turnaround")
async def turnaround(
    session: DbSession, principal: CurrentPrincipal, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> dict[str, Any]:
    """Hours from request to answer per queue (median, 90th percentile) and open consults: counts only."""
    return await service.turnaround_summary(session, principal, since=utc_now() - timedelta(days=days))
