"""Authorization-matrix probes for care-team tasks (Resource.CARE_TASK, FHIR Task; see
tests/access/matrix_kit.py).

The world gets, per organization, a stat task about the party's own patient assigned to the first clinical
caller and one about the party's other patient assigned to the bystander: every task is assigned, because an
unassigned open task would put the patient in every physician's and nurse's reach (the pool) and change the
other resources' expectations. Each task's title carries a marker only it holds."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update

from telecare.access.policy import Action, Resource
from telecare.caretasks.models import CareTask, TaskPriority, TaskStatus
from telecare.core.time import utc_now
from tests.access.matrix_kit import (
    CLINICAL,
    Caller,
    Outcome,
    Rel,
    Target,
    World,
    absent,
    body_of,
    ids_in,
    next_case,
    probe,
    targets,
    world_setup,
)
from tests.factories import setup_uow

TASK = Resource.CARE_TASK
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/tasks"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


def _marker(patient_id: int) -> str:
    return f"Task{patient_id}zq"


@world_setup
async def _task_world(world: World) -> None:
    now = utc_now()
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            for rec, assignee in ((party.own, party.accounts[CLINICAL[0]]), (party.other, party.bystander)):
                task = CareTask(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    kind="phq9-item9",
                    priority=TaskPriority.STAT,
                    status=TaskStatus.REQUESTED,
                    title=f"Review {_marker(rec.id)}",
                    source_kind="probe",
                    source_id=str(rec.id),
                    assignee_user_id=assignee.user_id,
                    created_at=now,
                    due_at=now + timedelta(days=365),
                )
                s.add(task)
                await s.flush()
                world.extra[f"task:{rec.id}"] = task.id


@targets(TASK)
async def _task_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(world.extra[f"task:{rec.id}"], rec.id, (*rec.markers, _marker(rec.id)))


async def _count(world: World, **where: Any) -> int:
    async with setup_uow(world.db) as s:
        return int(await s.scalar(select(func.count()).select_from(CareTask).filter_by(**where)) or 0)


@probe(TASK, R)
async def _task_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(TASK, S, collection=True)
async def _task_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(API, params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(TASK, C)
async def _task_create(world: World, caller: Caller, t: Target) -> Outcome:
    title = f"probe task {next_case()}"
    r = await world.client.post(
        API, json={"patient_id": t.patient_id, "title": title}, headers=caller.headers
    )
    made = await _count(world, title=title, patient_id=t.patient_id) == 1
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made)


@probe(TASK, UPD)
async def _task_acknowledge(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:  # back to waiting, so every case acknowledges afresh
        await s.execute(
            update(CareTask)
            .where(CareTask.id == t.id)
            .values(status=TaskStatus.REQUESTED, acknowledged_at=None, acknowledged_by_user_id=None)
        )
    r = await world.client.post(f"{API}/{t.id}/acknowledge", headers=caller.headers)
    effect = await _count(world, id=t.id, status=str(TaskStatus.ACCEPTED)) == 1
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, effect)


absent(TASK, D, "DELETE", f"{API}/{{id}}", reason="tasks are part of the record: completed, not deleted")
absent(
    TASK,
    E,
    "GET",
    f"{API}/{{id}}/$export",
    reason="tasks leave in the patient's export (Patient $export, section care_tasks)",
)
