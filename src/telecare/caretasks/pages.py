"""Care-team task pages: the live task list (/tasks), one task (acknowledge, complete with what was done)
and the chart's Tasks section. Thin: each handler calls caretasks.service. The socket tells an open list
that a task of a patient in the reader's reach changed (ids only); the page re-reads itself."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.auth.principal import Principal
from telecare.auth.sockets import SocketAuth, SocketCaller, SocketGuard, close_with
from telecare.caretasks import service
from telecare.core.db import Database
from telecare.identity.models import Patient, Role
from telecare.web.chart import ChartSection
from telecare.web.templating import NavItem, templates

router = APIRouter(include_in_schema=False)
_CLINICIANS = frozenset({Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST})
NAV_ITEMS = (
    NavItem(
        "/tasks", "Tasks", resource=Resource.CARE_TASK, action=Action.SEARCH, roles=_CLINICIANS, order=14
    ),
)


async def _chart(session: AsyncSession, principal: Principal, patient: Patient) -> dict[str, Any]:
    return {"tasks": await service.list_tasks(session, principal, patient_id=patient.id)}


CHART_SECTIONS = (
    ChartSection(
        "tasks", "Tasks", _chart, "caretasks/chart_section.html", resource=Resource.CARE_TASK, order=56
    ),
)


@router.get("/tasks", response_class=HTMLResponse)
async def list_page(request: Request, session: DbSession, principal: CurrentPrincipal) -> Response:
    rows = await service.list_tasks(session, principal)
    done = await service.list_tasks(session, principal, status="completed")
    return templates.TemplateResponse(
        request, "caretasks/list.html", {"principal": principal, "tasks": rows, "done": done[:20]}
    )


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(
    task_id: int, request: Request, session: DbSession, principal: CurrentPrincipal
) -> Response:
    task = await service.get_task(session, principal, task_id=task_id)
    return templates.TemplateResponse(request, "caretasks/task.html", {"principal": principal, "task": task})


@router.post("/tasks/{task_id}/acknowledge")
async def acknowledge(task_id: int, session: DbSession, principal: CurrentPrincipal) -> Response:
    await service.acknowledge(session, principal, task_id=task_id)
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


@router.post("/tasks/{task_id}/complete")
async def complete(
    task_id: int,
    session: DbSession,
    principal: CurrentPrincipal,
    outcome: Annotated[str, Form(max_length=service.MAX_TEXT)] = "",
) -> Response:
    await service.complete(session, principal, task_id=task_id, outcome=outcome)
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


TASK_SOCKET: SocketAuth[Any] = SocketAuth(*_CLINICIANS)


@router.websocket("/ws/tasks")
async def tasks_socket(
    websocket: WebSocket, caller: Annotated[SocketCaller[Any], Depends(TASK_SOCKET.dependency())]
) -> None:
    """Tells an open task list that a task changed, for a patient the reader still reaches (re-checked per
    event through the policy's scope): ids, priority and kind of change, never names or content. Closes
    (4401) once the login is gone."""
    assert caller.principal is not None
    principal = caller.principal
    db: Database = websocket.app.state.db
    events = websocket.app.state.events
    await websocket.accept()
    guard = SocketGuard(websocket, TASK_SOCKET, caller)
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
                if event.get("org_id") != principal.org_id:
                    continue
                patient_id = int(event.get("patient_id") or 0)
                async with db.unit_of_work(read_only=True) as s:
                    reachable = await access.still_reachable(
                        s, principal, [patient_id], resource=Resource.CARE_TASK, action=Action.SEARCH
                    )
                if patient_id not in reachable:
                    continue
                await websocket.send_json(
                    {
                        "type": "task",
                        "task_id": event.get("task_id"),
                        "priority": event.get("priority"),
                        "change": event.get("change"),
                    }
                )
    except WebSocketDisconnect:
        pass
    finally:
        guarding.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await guarding
