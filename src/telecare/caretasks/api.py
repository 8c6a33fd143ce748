"""REST routes for care-team tasks (thin: each calls one action in caretasks.service)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.caretasks import service
from telecare.caretasks.models import TaskPriority
from telecare.core.params import BoundedId, PathId, QueryId

router = APIRouter(prefix="/api/v1/tasks", tags=["care tasks"])


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: BoundedId
    title: str = Field(min_length=1, max_length=200)
    detail: str = Field(default="", max_length=service.MAX_TEXT)
    priority: TaskPriority = TaskPriority.ROUTINE
    due_in_hours: int = Field(default=24, ge=1, le=720)
    assignee_user_id: BoundedId | None = None


class OutcomeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(min_length=1, max_length=service.MAX_TEXT)


@router.get("")
async def list_tasks(
    session: DbSession,
    principal: CurrentPrincipal,
    status: Annotated[Literal["open", "completed"], Query()] = "open",
    patient_id: QueryId | None = None,
) -> list[dict[str, Any]]:
    rows = await service.list_tasks(session, principal, status=status, patient_id=patient_id)
    return [r.as_json() for r in rows]


@router.post("", status_code=201)
async def create_task(body: TaskCreate, session: DbSession, principal: CurrentPrincipal) -> JSONResponse:
    task = await service.create_task(
        session,
        principal,
        patient_id=body.patient_id,
        title=body.title,
        detail=body.detail,
        priority=str(body.priority),
        due_in_hours=body.due_in_hours,
        assignee_user_id=body.assignee_user_id,
    )
    row = await service.get_task(session, principal, task_id=task.id)
    return JSONResponse(row.as_json(), status_code=201, headers={"Location": f"/api/v1/tasks/{task.id}"})


@router.get("/{task_id}")
async def get_task(task_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    return (await service.get_task(session, principal, task_id=task_id)).as_json()


@router.post("/{task_id}/acknowledge")
async def acknowledge(task_id: PathId, session: DbSession, principal: CurrentPrincipal) -> dict[str, Any]:
    await service.acknowledge(session, principal, task_id=task_id)
    return (await service.get_task(session, principal, task_id=task_id)).as_json()


@router.post("/{task_id}/complete")
async def complete(
    task_id: PathId, body: OutcomeBody, session: DbSession, principal: CurrentPrincipal
) -> dict[str, Any]:
    await service.complete(session, principal, task_id=task_id, outcome=body.outcome)
    return (await service.get_task(session, principal, task_id=task_id)).as_json()
