"""Care-team tasks on both databases: a raised task reaches the patient's care-team physician and nobody
outside the relationship; without a care team it reaches the organization's physicians and nurses; it is
raised once per source; acknowledging and completing are recorded and audited; a task nobody acknowledges
by its deadline escalates once, with a notification that carries no clinical content."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from telecare.audit.models import AuditEntry
from telecare.auth.principal import system_principal
from telecare.caretasks import service
from telecare.caretasks import tasks as sweep
from telecare.caretasks.models import CareTask
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Role
from telecare.notifications.models import Notification
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    make_org,
    make_patient,
    make_user,
    setup_uow,
    token_for,
)

API = "/api/v1/tasks"


@dataclass
class World:
    org: int
    patient: int  # has a care-team physician
    lone: int  # has no care team
    physician: Account
    nurse: Account  # no relationship to `patient`
    therapist: Account
    stranger: Account  # a physician of another organization
    h: dict[str, dict[str, str]]


@pytest.fixture
async def world(db: Database) -> World:
    org = await make_org(db)
    other = await make_org(db)
    physician = await make_user(db, org, Role.PHYSICIAN)
    nurse = await make_user(db, org, Role.NURSE)
    therapist = await make_user(db, org, Role.THERAPIST)
    stranger = await make_user(db, other, Role.PHYSICIAN)
    patient = await make_patient(db, org)
    lone = await make_patient(db, org)
    assert isinstance(patient, int)
    assert isinstance(lone, int)
    assert physician.practitioner_id is not None
    await add_to_care_team(db, patient_id=patient, practitioner_id=physician.practitioner_id, org_id=org)
    accounts = {"physician": physician, "nurse": nurse, "therapist": therapist, "stranger": stranger}
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return World(org, patient, lone, physician, nurse, therapist, stranger, h)


async def raise_for(db: Database, world: World, patient_id: int, source: str = "1") -> int:
    async with db.unit_of_work() as s:
        task = await service.raise_task(
            s,
            system_principal(world.org),
            patient_id=patient_id,
            kind="phq9-item9",
            title="PHQ-9 item 9 positive",
            detail="Item 9: several days",
            priority="stat",
            source_kind="QuestionnaireResponse",
            source_id=source,
        )
        return task.id


async def visible(client: httpx.AsyncClient, h: dict[str, str]) -> set[int]:
    r = await client.get(API, headers=h)
    assert r.status_code == 200, r.text
    return {t["id"] for t in r.json()}


async def test_a_task_reaches_the_care_team_physician_only(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    task_id = await raise_for(db, world, world.patient)
    assert await visible(client, world.h["physician"]) == {task_id}
    row = (await client.get(f"{API}/{task_id}", headers=world.h["physician"])).json()
    assert row["priority"] == "stat"
    assert row["status"] == "requested"
    assert row["assignee_user_id"] == world.physician.user_id
    # Assigned to the physician: the unrelated nurse, the therapist and another organization see nothing.
    for who in ("nurse", "therapist", "stranger"):
        assert task_id not in await visible(client, world.h[who])
        assert (await client.get(f"{API}/{task_id}", headers=world.h[who])).status_code == 404


async def test_without_a_care_team_the_organizations_physicians_and_nurses_get_it(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    task_id = await raise_for(db, world, world.lone)
    assert task_id in await visible(client, world.h["physician"])
    assert task_id in await visible(client, world.h["nurse"])
    assert task_id not in await visible(client, world.h["therapist"])
    assert task_id not in await visible(client, world.h["stranger"])
    # The nurse acknowledges it: it is theirs now, and stays in their reach after it leaves the pool.
    r = await client.post(f"{API}/{task_id}/acknowledge", headers=world.h["nurse"])
    assert r.status_code == 200
    assert r.json()["status"] == "accepted"
    assert task_id not in await visible(client, world.h["physician"])
    r = await client.post(
        f"{API}/{task_id}/complete", json={"outcome": "Called; safety plan made."}, headers=world.h["nurse"]
    )
    assert r.status_code == 200
    assert r.json()["status"] == "completed"
    done = (await client.get(API, params={"status": "completed"}, headers=world.h["nurse"])).json()
    assert [t["outcome"] for t in done] == ["Called; safety plan made."]


async def test_raised_once_per_source(db: Database, world: World) -> None:
    first = await raise_for(db, world, world.patient, source="7")
    again = await raise_for(db, world, world.patient, source="7")
    other = await raise_for(db, world, world.patient, source="8")
    assert first == again != other
    async with setup_uow(db) as s:
        count = len((await s.execute(select(CareTask.id).where(CareTask.patient_id == world.patient))).all())
    assert count == 2


async def test_acknowledge_and_complete_rules(db: Database, client: httpx.AsyncClient, world: World) -> None:
    task_id = await raise_for(db, world, world.patient)
    h = world.h["physician"]
    r = await client.post(f"{API}/{task_id}/complete", json={"outcome": ""}, headers=h)
    assert r.status_code == 422
    assert "outcome" in r.text
    assert (await client.post(f"{API}/{task_id}/acknowledge", headers=h)).status_code == 200
    r = await client.post(f"{API}/{task_id}/acknowledge", headers=h)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.post(f"{API}/{task_id}/acknowledge", headers=world.h["stranger"])).status_code == 404
    async with setup_uow(db) as s:
        actions = (
            (
                await s.execute(
                    select(AuditEntry.action).where(
                        AuditEntry.resource_type == "Task", AuditEntry.resource_id == str(task_id)
                    )
                )
            )
            .scalars()
            .all()
        )
    assert "create" in actions
    assert "update" in actions


async def test_a_clinician_creates_a_task_for_a_patient_in_their_care(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {"patient_id": world.patient, "title": "Call back about the new dose", "priority": "urgent"}
    r = await client.post(API, json=body, headers=world.h["physician"])
    assert r.status_code == 201, r.text
    assert r.json()["assignee_user_id"] == world.physician.user_id
    r = await client.post(API, json=body, headers=world.h["nurse"])  # no relationship to the patient
    assert r.status_code == 404
    r = await client.post(API, json={**body, "priority": "whenever"}, headers=world.h["physician"])
    assert r.status_code == 422
    assert "priority" in r.text


async def test_an_unacknowledged_task_escalates_once(db: Database, world: World) -> None:
    task_id = await raise_for(db, world, world.patient)
    assert await sweep.run_due(db) == 0  # not due yet
    async with setup_uow(db) as s:
        await s.execute(
            update(CareTask).where(CareTask.id == task_id).values(due_at=utc_now() - timedelta(minutes=1))
        )
    assert await sweep.run_due(db) == 1
    assert await sweep.run_due(db) == 0  # once
    async with setup_uow(db) as s:
        task = await s.get(CareTask, task_id)
        assert task is not None
        assert task.escalated_at is not None
        notes = (
            (await s.execute(select(Notification).where(Notification.kind == "caretask.escalated")))
            .scalars()
            .all()
        )
    assert [n.recipient_user_id for n in notes] == [world.physician.user_id]
    assert "Item 9" not in notes[0].body
    assert notes[0].link == f"/tasks/{task_id}"


async def test_the_task_page_acknowledges_without_javascript(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    from tests.factories import web_login

    task_id = await raise_for(db, world, world.patient)
    csrf = await web_login(client, world.physician)
    page = await client.get("/tasks")
    assert page.status_code == 200
    assert f'data-task-id="{task_id}"' in page.text
    assert 'role="alert"' in page.text
    r = await client.post(f"/tasks/{task_id}/acknowledge", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert "accepted" in (await client.get(f"/tasks/{task_id}")).text
