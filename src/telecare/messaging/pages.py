"""Messaging pages: the patient's conversations and composer, the staff inbox with its filters (live over a
WebSocket that carries ids only), the thread page with attachments, reply, assignment, closing and logged
time, and the chart's Messages section. Thin: each handler calls messaging.service."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.auth.sockets import SocketAuth, SocketCaller, SocketGuard, close_with
from telecare.core.db import Database
from telecare.core.errors import AppError
from telecare.core.time import utc_now
from telecare.identity.models import Patient, Role
from telecare.messaging import repository as repo
from telecare.messaging import rules, service
from telecare.messaging.api import read_uploads
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
_MESSAGING_ROLES = frozenset({Role.PATIENT, Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST})
NAV_ITEMS = (
    NavItem(
        "/messages",
        "Messages",
        resource=Resource.COMMUNICATION,
        action=Action.SEARCH,
        roles=_MESSAGING_ROLES,
        order=15,
    ),
    NavItem(
        "/messages/teams",
        "Response times",
        resource=Resource.AGGREGATE,
        action=Action.READ,
        roles=frozenset({Role.COORDINATOR}),
        order=30,
    ),
)
Files = Annotated[list[UploadFile], File()]
FILTER_LABELS = {
    "all": "Open",
    "unassigned": "Unassigned",
    "mine": "Assigned to me",
    "overdue": "Overdue",
    "urgent": "Urgent",
    "closed": "Closed",
}


def _language(principal: Principal) -> str:
    return "es" if principal.extra.get("language") == "es" else "en"


async def _chart_messages(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    rows = await service.list_threads(session, principal, patient_id=patient.id)
    return {"threads": rows}


CHART_SECTIONS = (
    ChartSection(
        "messages",
        "Messages",
        _chart_messages,
        "messaging/chart_section.html",
        resource=Resource.COMMUNICATION,
        order=50,
    ),
)


@router.get("/messages", response_class=HTMLResponse)
async def inbox_page(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    filter: Annotated[str, Query(pattern="^(all|unassigned|mine|overdue|urgent|closed)$")] = "all",
    inbox_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """A patient's conversations, or the staff inbox."""
    rows = await service.list_threads(session, principal, filter=filter, inbox_id=inbox_id)
    counts = await service.unread_counts(session, principal)
    is_patient = access_rules.is_patient(principal)
    inboxes = await service.list_inboxes(session, principal)
    mine = set() if is_patient else set(await repo.member_inbox_ids(session, principal))
    return templates.TemplateResponse(
        request,
        "messaging/inbox.html",
        {
            "principal": principal,
            "rows": rows,
            "counts": counts,
            "filter": filter,
            "filters": FILTER_LABELS,
            "inbox_id": inbox_id,
            "inboxes": [i for i in inboxes if is_patient or i.id in mine],
            "is_patient": is_patient,
            "tz": await _tz(session, principal),
        },
    )


async def _tz(session: AsyncSession, principal: Principal) -> Any:
    return (await service.org_calendar(session, principal.org_id)).zone


def _composer_context(principal: Principal, **extra: Any) -> dict[str, Any]:
    return {
        "principal": principal,
        "guidance": rules.EMERGENCY_GUIDANCE[_language(principal)],
        "max_files": service.MAX_ATTACHMENTS,
        "errors": {},
        "values": {},
        **extra,
    }


@router.get("/messages/teams", response_class=HTMLResponse)
async def teams_page(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
) -> Response:
    """Coordinators see each team inbox's open, unassigned, overdue and urgent threads and the median time
    to a first response: numbers only."""
    rows = await service.response_summary(session, principal, since=utc_now() - timedelta(days=days))
    return templates.TemplateResponse(
        request,
        "messaging/teams.html",
        {"principal": principal, "rows": rows, "days": days, "tz": await _tz(session, principal)},
    )


@router.get("/messages/new", response_class=HTMLResponse)
async def compose_page(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    patient_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    inboxes = await _writable_inboxes(session, principal)
    return templates.TemplateResponse(
        request,
        "messaging/compose.html",
        _composer_context(principal, inboxes=inboxes, values={"patient_id": patient_id or ""}),
    )


async def _writable_inboxes(session: AsyncSession, principal: Principal) -> list[Any]:
    """The inboxes the composer offers: those open to patients, or for staff those they belong to."""
    inboxes = await service.list_inboxes(session, principal)
    if not access_rules.is_patient(principal):
        mine = set(await repo.member_inbox_ids(session, principal))
        inboxes = [i for i in inboxes if i.id in mine]
    return inboxes


@router.post("/messages/new", response_class=HTMLResponse)
async def compose_send(
    request: Request,
    session: DbSession,
    principal: CurrentPrincipal,
    inbox_id: Annotated[int, Form(ge=1)],
    subject: Annotated[str, Form(max_length=200)],
    body: Annotated[str, Form(max_length=service.MAX_BODY)],
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    patient_id: Annotated[str, Form(max_length=12)] = "",
    files: Files = [],  # noqa: B006
) -> Response:
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    pid = int(patient_id) if patient_id.strip().isdigit() else None
    try:
        async with session.begin_nested():
            result = await service.start_thread(
                session,
                principal,
                inbox_id=inbox_id,
                subject=subject,
                body=body,
                patient_id=pid,
                uploads=uploads,
                idempotency_key=idempotency_key or None,
            )
    except AppError as exc:
        inboxes = await _writable_inboxes(session, principal)
        errors = {e.field: e.message for e in exc.errors} or {"form": exc.detail}
        context = _composer_context(
            principal,
            inboxes=inboxes,
            errors=errors,
            values={"inbox_id": inbox_id, "subject": subject, "body": body, "patient_id": patient_id},
        )
        return templates.TemplateResponse(
            request, "messaging/compose.html", context, status_code=exc.status_code
        )
    suffix = "?sent=1&urgent=1" if result.emergency is not None else "?sent=1"
    return RedirectResponse(f"/messages/{result.thread.id}{suffix}", status_code=303)


@router.get("/messages/{thread_id}", response_class=HTMLResponse)
async def thread_page(
    request: Request,
    thread_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    sent: Annotated[int, Query(ge=0, le=1)] = 0,
    urgent: Annotated[int, Query(ge=0, le=1)] = 0,
) -> Response:
    view = await service.view_thread(session, principal, thread_id=thread_id)
    billing = None
    if view.can_act and view.thread.patient_initiated:
        billing = await service.digital_em(session, principal, thread_id=thread_id)
    inboxes = [] if not view.can_act else await service.list_inboxes(session, principal)
    guidance = rules.EMERGENCY_GUIDANCE[_language(principal)]
    return templates.TemplateResponse(
        request,
        "messaging/thread.html",
        {
            "principal": principal,
            "view": view,
            "billing": billing,
            "inboxes": inboxes,
            "sent": bool(sent),
            "urgent": bool(urgent),
            "guidance": guidance,
            "crisis": urgent and _mental_health(view),
            "max_files": service.MAX_ATTACHMENTS,
            "tz": await _tz(session, principal),
            "now": utc_now(),
        },
    )


def _mental_health(view: service.ThreadView) -> bool:
    for m in reversed(view.messages):
        if m.from_patient and m.emergency_terms:
            match = rules.find_emergency_terms(" ".join(m.emergency_terms))
            return match is not None and rules.EmergencyKind.MENTAL_HEALTH in match.kinds
    return False


@router.post("/messages/{thread_id}/reply")
async def reply_send(
    request: Request,
    thread_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    body: Annotated[str, Form(max_length=service.MAX_BODY)],
    idempotency_key: Annotated[str, Form(max_length=200)] = "",
    minutes: Annotated[str, Form(max_length=3)] = "",
    files: Files = [],  # noqa: B006
) -> Response:
    uploads = await read_uploads(files, session.settings.max_upload_bytes)
    spent = int(minutes) if minutes.strip().isdigit() and int(minutes) > 0 else None
    result = await service.reply(
        session,
        principal,
        thread_id=thread_id,
        body=body,
        uploads=uploads,
        idempotency_key=idempotency_key or None,
        minutes=spent,
    )
    suffix = "?sent=1&urgent=1" if result.emergency is not None else "?sent=1"
    return RedirectResponse(f"/messages/{thread_id}{suffix}#latest", status_code=303)


@router.post("/messages/{thread_id}/assign")
async def assign(
    thread_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    assignee_user_id: Annotated[str, Form(max_length=12)] = "",
) -> Response:
    uid = int(assignee_user_id) if assignee_user_id.strip().isdigit() else None
    await service.assign_thread(session, principal, thread_id=thread_id, assignee_user_id=uid)
    return RedirectResponse(f"/messages/{thread_id}", status_code=303)


@router.post("/messages/{thread_id}/move")
async def move(
    thread_id: int, session: DbSession, principal: CurrentPrincipal, inbox_id: Annotated[int, Form(ge=1)]
) -> Response:
    await service.move_thread(session, principal, thread_id=thread_id, inbox_id=inbox_id)
    return RedirectResponse("/messages", status_code=303)


@router.post("/messages/{thread_id}/close")
async def close(thread_id: int, session: DbSession, principal: CurrentPrincipal) -> Response:
    await service.close_thread(session, principal, thread_id=thread_id)
    return RedirectResponse(f"/messages/{thread_id}", status_code=303)


@router.post("/messages/{thread_id}/time")
async def log_time(
    thread_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    minutes: Annotated[int, Form(ge=1, le=240)],
    activity: Annotated[str, Form(max_length=200)] = "review",
) -> Response:
    await service.log_time(session, principal, thread_id=thread_id, minutes=minutes, activity=activity)
    return RedirectResponse(f"/messages/{thread_id}#billing", status_code=303)


# ---- live updates ------------------------------------------------------------------------------------------

INBOX_SOCKET: SocketAuth[Any] = SocketAuth(*_MESSAGING_ROLES)


@router.websocket("/ws/messaging")
async def messaging_socket(
    websocket: WebSocket, caller: Annotated[SocketCaller[Any], Depends(INBOX_SOCKET.dependency())]
) -> None:
    """Tells an open inbox or thread page that a conversation it shows changed: ids only (thread, inbox,
    kind of change), never content, so the page re-reads it through the audited API. Staff hear about the
    inboxes they belong to, a patient about their own conversations. Closes (4401) once the login is gone."""
    assert caller.principal is not None
    principal = caller.principal
    db: Database = websocket.app.state.db
    events = websocket.app.state.events
    await websocket.accept()
    inbox_ids: set[int] = set()
    refreshed = utc_now() - timedelta(minutes=1)

    async def refresh() -> None:
        nonlocal refreshed
        if not access_rules.is_patient(principal):
            async with db.unit_of_work(read_only=True) as s:
                inbox_ids.clear()
                inbox_ids.update(await repo.member_inbox_ids(s, principal))
        refreshed = utc_now()

    await refresh()
    guard = SocketGuard(websocket, INBOX_SOCKET, caller)
    guarding = asyncio.create_task(guard.run())
    try:
        async with events.subscribe(service.TOPIC) as queue:
            await websocket.send_json({"type": "ready"})
            receiver = asyncio.create_task(websocket.receive_text())
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait(
                    {getter, receiver, guarding}, return_when=asyncio.FIRST_COMPLETED
                )
                if guarding in done:
                    getter.cancel()
                    receiver.cancel()
                    await close_with(websocket, guarding.result())
                    return
                if receiver in done:
                    getter.cancel()
                    receiver.result()
                    receiver = asyncio.create_task(websocket.receive_text())
                    continue
                event = getter.result()
                if access_rules.is_patient(principal):
                    if event.get("patient_id") != principal.patient_id:
                        continue
                else:
                    if utc_now() - refreshed > timedelta(seconds=5):
                        await refresh()
                    if event.get("inbox_id") not in inbox_ids and event.get("from_inbox_id") not in inbox_ids:
                        continue
                await websocket.send_json(
                    {
                        "type": "thread",
                        "thread_id": event.get("thread_id"),
                        "inbox_id": event.get("inbox_id"),
                        "change": event.get("change"),
                        "urgent": bool(event.get("urgent")),
                    }
                )
    except WebSocketDisconnect:
        pass
    finally:
        guarding.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await guarding
