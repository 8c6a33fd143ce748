"""REST routes for secure messaging (thin: each calls one action in messaging.service).

Sending takes `multipart/form-data` (the text fields and up to five `files`) or a urlencoded form without
files, and honours an `Idempotency-Key` header: a retry with the same key and the same request returns the
first message (200 instead of 201) and stores nothing twice."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse, Response

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.core.params import PathId, QueryId
from telecare.files.models import StoredFile
from telecare.messaging import rules, service
from telecare.messaging.models import Inbox, Message
from telecare.messaging.schemas import (
    AssignBody,
    AttachmentRead,
    DigitalEmRead,
    HolidayCreate,
    InboxCreate,
    InboxRead,
    MemberAdd,
    MessageRead,
    MoveBody,
    ReadBody,
    SendResponse,
    ThreadRead,
    ThreadSummary,
    TimeBody,
    UnreadRead,
)

router = APIRouter(prefix="/api/v1/messaging", tags=["messaging"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
Files = Annotated[list[UploadFile], File(description="Up to five photos (JPEG, PNG, HEIC) or PDFs")]


def attachment_read(f: StoredFile) -> AttachmentRead:
    return AttachmentRead(
        id=f.id,
        name=f.display_name,
        content_type=f.content_type,
        byte_size=f.byte_size,
        width=f.width,
        height=f.height,
        url=f"/api/v1/files/{f.id}",
    )


def message_read(m: Message, names: dict[int, str], files: list[StoredFile]) -> MessageRead:
    return MessageRead(
        id=m.id,
        thread_id=m.thread_id,
        from_patient=m.from_patient,
        sender_user_id=m.sender_user_id,
        sender_name=names.get(m.sender_user_id, ""),
        body=m.body,
        created_at=m.created_at,
        read_at=m.read_at,
        attachments=[attachment_read(f) for f in files],
    )


def _inbox_read(i: Inbox) -> InboxRead:
    return InboxRead(
        id=i.id,
        name=i.name,
        slug=i.slug,
        kind=str(i.kind),
        response_business_days=i.response_business_days,
        patients_may_write=i.patients_may_write,
    )


async def read_uploads(files: list[UploadFile], limit: int) -> list[service.Upload]:
    """Read each part up to one byte past the limit: the files domain refuses it with a 413 naming it."""
    out = []
    for f in files:
        if not f.filename and not f.size:
            continue  # an empty file input of a browser form
        out.append(service.Upload(await f.read(limit + 1), f.filename))
    return out


def _send_response(principal: Principal, result: service.SendResult) -> Response:
    names = {principal.user_id: principal.display_name}
    guidance = rules.guidance_for(result.emergency) if result.emergency is not None else []
    body = SendResponse(
        thread_id=result.thread.id,
        message=message_read(result.message, names, result.attachments),
        created=result.created,
        emergency_guidance=guidance,
    )
    status = 201 if result.created else 200
    headers = {"Location": f"/api/v1/messaging/threads/{result.thread.id}"}
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


@router.get("/inboxes", response_model=list[InboxRead])
async def inboxes(session: DbSession, principal: CurrentPrincipal) -> list[InboxRead]:
    """The teams of the organization (for a patient: those that take messages from patients)."""
    return [_inbox_read(i) for i in await service.list_inboxes(session, principal)]


@router.get("/inboxes/{inbox_id}", response_model=InboxRead)
async def inbox(inbox_id: PathId, session: DbSession, principal: CurrentPrincipal) -> InboxRead:
    return _inbox_read(await service.get_inbox(session, principal, inbox_id=inbox_id))


@router.post("/inboxes", response_model=InboxRead, status_code=201)
async def create_inbox(body: InboxCreate, session: DbSession, principal: CurrentPrincipal) -> InboxRead:
    """Coordinators and admins create a team inbox with its response-time target (business days)."""
    inbox = await service.create_inbox(session, principal, **body.model_dump())
    return _inbox_read(inbox)


@router.post("/inboxes/{inbox_id}/members", status_code=204)
async def add_member(
    inbox_id: PathId, body: MemberAdd, session: DbSession, principal: CurrentPrincipal
) -> Response:
    await service.add_member(session, principal, inbox_id=inbox_id, user_id=body.user_id)
    return Response(status_code=204)


@router.delete("/inboxes/{inbox_id}/members/{user_id}", status_code=204)
async def remove_member(
    inbox_id: PathId, user_id: PathId, session: DbSession, principal: CurrentPrincipal
) -> Response:
    await service.remove_member(session, principal, inbox_id=inbox_id, user_id=user_id)
    return Response(status_code=204)


@router.post("/holidays", status_code=204)
async def add_holiday(body: HolidayCreate, session: DbSession, principal: CurrentPrincipal) -> Response:
    """A day the organization's teams are closed: response-time targets skip it."""
    await service.add_holiday(session, principal, day=body.day, name=body.name)
    return Response(status_code=204)


@router.get("/threads", response_model=list[ThreadSummary])
async def threads(
    session: DbSession,
    principal: CurrentPrincipal,
    filter: Annotated[str, Query(description=", ".join(service.FILTERS))] = "all",
    inbox_id: QueryId | None = None,
    patient_id: QueryId | None = None,
) -> list[ThreadSummary]:
    """A patient's conversations, or the staff inbox (open threads of the caller's inboxes, filtered)."""
    rows = await service.list_threads(
        session, principal, filter=filter, inbox_id=inbox_id, patient_id=patient_id
    )
    return [_summary(r) for r in rows]


@router.post("/threads", response_model=SendResponse, status_code=201)
async def start_thread(
    session: DbSession,
    principal: CurrentPrincipal,
    inbox_id: Annotated[int, Form(ge=1)],
    subject: Annotated[str, Form(max_length=200)],
    body: Annotated[str, Form(max_length=service.MAX_BODY)],
    idempotency_key: IdempotencyKey = None,
    patient_id: Annotated[int | None, Form(ge=1)] = None,
    files: Files = [],  # noqa: B006 - FastAPI's way to declare an optional list of parts
) -> Response:
    """Start a conversation: a patient with a team, or a team member with a patient."""
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    result = await service.start_thread(
        session,
        principal,
        inbox_id=inbox_id,
        subject=subject,
        body=body,
        patient_id=patient_id,
        uploads=uploads,
        idempotency_key=idempotency_key,
    )
    return _send_response(principal, result)


@router.get("/threads/{thread_id}", response_model=ThreadRead)
async def thread(thread_id: PathId, session: DbSession, principal: CurrentPrincipal) -> ThreadRead:
    """The conversation; the other side's messages shown here are marked read."""
    view = await service.view_thread(session, principal, thread_id=thread_id)
    t = view.thread
    return ThreadRead(
        id=t.id,
        subject=t.subject,
        status=str(t.status),
        priority=str(t.priority),
        patient_id=t.patient_id,
        inbox_id=t.inbox_id,
        inbox_name=view.inbox.name,
        patient_initiated=t.patient_initiated,
        assigned_user_id=t.assigned_user_id,
        created_at=t.created_at,
        due_at=t.due_at,
        first_review_at=t.first_review_at,
        closed_at=t.closed_at,
        messages=[message_read(m, view.names, view.attachments.get(m.id, [])) for m in view.messages],
    )


@router.post("/threads/{thread_id}/messages", response_model=SendResponse, status_code=201)
async def reply(
    thread_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    body: Annotated[str, Form(max_length=service.MAX_BODY)],
    idempotency_key: IdempotencyKey = None,
    minutes: Annotated[int | None, Form(ge=1, le=240)] = None,
    files: Files = [],  # noqa: B006
) -> Response:
    """Reply in a conversation (staff may log the minutes the reply took)."""
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    result = await service.reply(
        session,
        principal,
        thread_id=thread_id,
        body=body,
        uploads=uploads,
        idempotency_key=idempotency_key,
        minutes=minutes,
    )
    return _send_response(principal, result)


@router.post("/threads/{thread_id}/read")
async def mark_read(
    thread_id: PathId, session: DbSession, principal: CurrentPrincipal, body: ReadBody | None = None
) -> dict[str, int]:
    marked = await service.mark_read(
        session, principal, thread_id=thread_id, up_to_message_id=body.up_to_message_id if body else None
    )
    return {"thread_id": thread_id, "marked": marked}


def _summary(row: service.ThreadRow) -> ThreadSummary:
    return ThreadSummary(**{k: v for k, v in row.__dict__.items() if k in ThreadSummary.model_fields})


@router.post("/threads/{thread_id}/assign", response_model=ThreadSummary)
async def assign(
    thread_id: PathId, body: AssignBody, session: DbSession, principal: CurrentPrincipal
) -> ThreadSummary:
    """Assign the conversation to a member of its inbox (null: back to the team)."""
    t = await service.assign_thread(
        session, principal, thread_id=thread_id, assignee_user_id=body.assignee_user_id
    )
    return _summary(await service.thread_row(session, principal, t))


@router.post("/threads/{thread_id}/move", response_model=ThreadSummary)
async def move(
    thread_id: PathId, body: MoveBody, session: DbSession, principal: CurrentPrincipal
) -> ThreadSummary:
    """Hand the conversation to another team's inbox."""
    t = await service.move_thread(session, principal, thread_id=thread_id, inbox_id=body.inbox_id)
    return _summary(await service.thread_row(session, principal, t))


@router.post("/threads/{thread_id}/close", response_model=ThreadSummary)
async def close(thread_id: PathId, session: DbSession, principal: CurrentPrincipal) -> ThreadSummary:
    """Close a handled conversation (staff of its inbox, or the patient)."""
    t = await service.close_thread(session, principal, thread_id=thread_id)
    return _summary(await service.thread_row(session, principal, t))


@router.post("/threads/{thread_id}/time", status_code=201)
async def log_time(
    thread_id: PathId, body: TimeBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, int]:
    """Minutes a clinician spent on the conversation (online digital E/M)."""
    entry = await service.log_time(
        session, principal, thread_id=thread_id, minutes=body.minutes, activity=body.activity
    )
    return {"id": entry.id, "minutes": entry.minutes}


@router.get("/threads/{thread_id}/billing", response_model=DigitalEmRead)
async def billing(thread_id: PathId, session: DbSession, principal: CurrentPrincipal) -> DigitalEmRead:
    """The online digital E/M code (99421-99423, 98970-98972) the logged time supports, with its facts."""
    p = await service.digital_em(session, principal, thread_id=thread_id)
    return DigitalEmRead(
        code=p.code,
        minutes=p.minutes,
        window_start=p.window_start,
        window_end=p.window_end,
        final=p.final,
        reasons=list(p.reasons),
    )


@router.get("/unread", response_model=UnreadRead)
async def unread(session: DbSession, principal: CurrentPrincipal) -> UnreadRead:
    """Unread counts for the caller's side (and, for staff, overdue conversations in their inboxes)."""
    counts = await service.unread_counts(session, principal)
    return UnreadRead(total=counts.total, by_inbox=counts.by_inbox, overdue=counts.overdue)


@router.get("/summary")
async def summary(
    session: DbSession, principal: CurrentPrincipal, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> list[dict[str, object]]:
    """Per team inbox, counts only: open, unassigned, overdue and urgent threads, the oldest due date and
    the median hours to the first response (threads started in the last `days`). Coordinators, admins and
    informatics (aggregates); no patient and no message content."""
    from datetime import timedelta

    from telecare.core.time import utc_now

    rows = await service.response_summary(session, principal, since=utc_now() - timedelta(days=days))
    return [
        {**r.__dict__, "oldest_due_at": r.oldest_due_at.isoformat() if r.oldest_due_at else None}
        for r in rows
    ]
