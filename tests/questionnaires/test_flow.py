"""Questionnaires through the REST API and the pages, on both databases: a clinician assigns PHQ-9 every
14 days; the patient answers item 9 "several days" first and the care team's task is raised from that one
save, with the crisis flag, even if the rest is abandoned; the complete response is scored and stored as a
total with its band; the next occurrence becomes due; everything served validates as FHIR R4; people outside
the relationship see nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.questionnaire import Questionnaire
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from sqlalchemy import select

from telecare.caretasks.models import CareTask
from telecare.core.db import Database
from telecare.identity.models import Role
from telecare.questionnaires.models import QuestionnaireAnswerSet, QuestionnaireScore
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    make_org,
    make_patient,
    make_user,
    setup_uow,
    token_for,
    web_login,
)

API = "/api/v1/questionnaires"
SEVERAL = "LA6569-3"
NOT_AT_ALL = "LA6568-5"
NEARLY = "LA6571-9"


@dataclass
class World:
    patient: Account
    therapist: Account
    outsider: Account
    h: dict[str, dict[str, str]]


@pytest.fixture
async def world(db: Database) -> World:
    org = await make_org(db)
    therapist = await make_user(db, org, Role.THERAPIST)
    outsider = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id is not None
    assert therapist.practitioner_id is not None
    await add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=therapist.practitioner_id, org_id=org
    )
    accounts = {"patient": patient, "therapist": therapist, "outsider": outsider}
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return World(patient, therapist, outsider, h)


async def tasks(db: Database, patient_id: int) -> list[CareTask]:
    async with setup_uow(db) as s:
        return list((await s.execute(select(CareTask).where(CareTask.patient_id == patient_id))).scalars())


async def start(client: httpx.AsyncClient, world: World, **extra: Any) -> int:
    body = {"patient_id": world.patient.patient_id, "questionnaire": "phq-9", **extra}
    r = await client.post(f"{API}/responses", json=body, headers=world.h["patient"])
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def save(
    client: httpx.AsyncClient, world: World, rid: int, answers: dict[str, Any], **kw: Any
) -> httpx.Response:
    return await client.post(
        f"{API}/responses/{rid}/answers", json={"answers": answers, **kw}, headers=world.h["patient"]
    )


async def test_item9_first_raises_the_task_and_the_total_waits(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    assert world.patient.patient_id is not None
    r = await client.post(
        f"{API}/assignments",
        json={"patient_id": world.patient.patient_id, "questionnaire": "phq-9", "every_days": 14},
        headers=world.h["therapist"],
    )
    assert r.status_code == 201, r.text
    assignment = r.json()["id"]
    rid = await start(client, world, assignment_id=assignment)
    r = await save(client, world, rid, {"phq-9-9": SEVERAL})
    assert r.status_code == 200, r.text
    assert r.json()["crisis"] is True
    assert r.json()["score"] is None
    found = await tasks(db, world.patient.patient_id)
    assert [(t.kind, t.priority, t.source_id, t.assignee_user_id) for t in found] == [
        ("phq9-item9", "stat", str(rid), world.therapist.user_id)
    ]
    # The therapist who assigned it sees it at once; the unrelated nurse does not.
    mine = (await client.get("/api/v1/tasks", headers=world.h["therapist"])).json()
    assert [t["kind"] for t in mine] == ["phq9-item9"]
    assert (await client.get("/api/v1/tasks", headers=world.h["outsider"])).json() == []
    # Submitting with items missing keeps what was given and names what is missing.
    r = await save(client, world, rid, {"phq-9-1": NOT_AT_ALL}, complete=True)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    missing = {e["field"] for e in r.json()["errors"]}
    assert missing == {f"answers.phq-9-{n}" for n in range(2, 9)}
    assert r.json()["crisis"] is True
    # Changing item 9 back does not withdraw the task; finishing stores the total and its band.
    answers = {f"phq-9-{n}": NEARLY for n in range(1, 9)} | {"phq-9-9": NOT_AT_ALL}
    r = await save(client, world, rid, answers, complete=True)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    assert r.json()["score"]["value"] == 24
    assert r.json()["score"]["band"] == "severe"
    Observation.model_validate(r.json()["score"]["observation"])
    assert len(await tasks(db, world.patient.patient_id)) == 1
    # The next occurrence is due 14 days on; the response is served as FHIR with every item.
    summary = (
        await client.get(f"{API}/patients/{world.patient.patient_id}", headers=world.h["therapist"])
    ).json()
    assert summary["due"][0]["every_days"] == 14
    assert summary["due"][0]["overdue"] is False
    qr = (await client.get(f"{API}/responses/{rid}", headers=world.h["therapist"])).json()
    QuestionnaireResponse.model_validate(qr)
    assert qr["status"] == "completed"
    assert [i["linkId"] for i in qr["item"]] == [f"phq-9-{n}" for n in range(1, 10)]
    # A completed response is closed to edits.
    assert (await save(client, world, rid, {"phq-9-1": SEVERAL})).status_code == 409


async def test_an_abandoned_response_keeps_its_item9_answer_and_task(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    assert world.patient.patient_id is not None
    rid = await start(client, world)
    await save(client, world, rid, {"phq-9-1": SEVERAL, "phq-9-9": NEARLY})
    async with setup_uow(db) as s:
        row = await s.get(QuestionnaireAnswerSet, rid)
        assert row is not None
        assert row.status == "in-progress"
        assert row.answers == {"phq-9-1": SEVERAL, "phq-9-9": NEARLY}
        assert row.crisis_at is not None
        assert (await s.execute(select(QuestionnaireScore))).first() is None
    assert len(await tasks(db, world.patient.patient_id)) == 1
    # Starting again resumes the same response rather than opening a second one.
    assert await start(client, world) == rid


async def test_bad_answers_are_refused_naming_the_question(client: httpx.AsyncClient, world: World) -> None:
    rid = await start(client, world)
    r = await save(client, world, rid, {"phq-9-1": "LA9999-9", "phq-9-99": SEVERAL})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"answers.phq-9-1", "answers.phq-9-99"}
    r = await client.post(
        f"{API}/responses",
        json={"patient_id": world.patient.patient_id, "questionnaire": "nope"},
        headers=world.h["patient"],
    )
    assert r.status_code == 404


async def test_nobody_outside_the_relationship_reads_or_answers(
    client: httpx.AsyncClient, world: World
) -> None:
    rid = await start(client, world)
    await save(client, world, rid, {"phq-9-2": SEVERAL})
    assert (await client.get(f"{API}/responses/{rid}", headers=world.h["outsider"])).status_code == 404
    r = await client.post(f"{API}/responses/{rid}/answers", json={"answers": {}}, headers=world.h["outsider"])
    assert r.status_code == 404
    summary = await client.get(f"{API}/patients/{world.patient.patient_id}", headers=world.h["outsider"])
    assert summary.status_code == 404
    # Patients do not assign questionnaires.
    r = await client.post(
        f"{API}/assignments",
        json={"patient_id": world.patient.patient_id, "questionnaire": "gad-7"},
        headers=world.h["patient"],
    )
    assert r.status_code == 403


async def test_definitions_are_served_as_fhir(client: httpx.AsyncClient, world: World) -> None:
    listing = (await client.get(API, headers=world.h["patient"])).json()
    assert {d["id"] for d in listing} == {"phq-9", "gad-7"}
    for d in listing:
        Questionnaire.model_validate(
            (await client.get(f"{API}/definitions/{d['id']}", headers=world.h["patient"])).json()
        )
    assert (await client.get(API)).status_code == 401


async def test_the_form_works_without_javascript(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    assert world.patient.patient_id is not None
    csrf = await web_login(client, world.patient)
    r = await client.post("/questionnaires/start", data={"csrf_token": csrf, "questionnaire": "phq-9"})
    assert r.status_code == 303
    url = r.headers["location"]
    page = await client.get(url)
    assert page.status_code == 200
    assert "<legend>Thoughts that you would be better off dead" in page.text
    assert 'id="crisis-resources" tabindex="-1" hidden' in page.text
    # Submit with only item 9 answered: the form comes back with the errors, the answer kept, crisis shown.
    r = await client.post(url, data={"csrf_token": csrf, "phq-9-9": SEVERAL, "action": "submit"})
    assert r.status_code == 422
    assert 'id="error-summary"' in r.text
    assert f'value="{SEVERAL}" checked' in r.text
    assert "call or text 988" in r.text
    assert 'id="crisis-resources" tabindex="-1" hidden' not in r.text
    assert len(await tasks(db, world.patient.patient_id)) == 1
    answers = {f"phq-9-{n}": SEVERAL for n in range(1, 10)}
    r = await client.post(url, data={"csrf_token": csrf, **answers, "action": "submit"})
    assert r.status_code == 303
    done = await client.get(url)
    assert "Total score: <strong>9</strong> (mild)" in done.text
    mine = await client.get("/questionnaires")
    assert "9 (mild)" in mine.text
