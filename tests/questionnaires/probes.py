"""Authorization-matrix probes for questionnaires (Resource.QUESTIONNAIRE_RESPONSE; see
tests/access/matrix_kit.py).

The world gets, per patient of each organization, an in-progress GAD-7 response (GAD-7 so that no probe
raises an item-9 task, which would add a care relationship) whose free text is never shown, and the probes
read it, list the patient's questionnaires, start one (create) and save an answer (update). Each patient's
markers are its MRN and names, which the summary and response bodies carry only through `patient_id`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.questionnaires.models import QuestionnaireAnswerSet, ResponseStatus
from tests.access.matrix_kit import (
    Caller,
    Outcome,
    Rel,
    Target,
    World,
    absent,
    body_of,
    ids_in,
    probe,
    targets,
    world_setup,
)
from tests.factories import setup_uow

QR = Resource.QUESTIONNAIRE_RESPONSE
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/questionnaires"
CODES = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


@world_setup
async def _questionnaire_world(world: World) -> None:
    now = utc_now()
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            for rec in (party.own, party.other):
                row = QuestionnaireAnswerSet(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    questionnaire="gad-7",
                    questionnaire_version="1",
                    status=ResponseStatus.IN_PROGRESS,
                    answers={"gad-7-1": CODES[1]},
                    started_at=now,
                    updated_at=now,
                )
                s.add(row)
                await s.flush()
                world.extra[f"qr:{rec.id}"] = row.id


@targets(QR)
async def _response_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(world.extra[f"qr:{rec.id}"], rec.id, tuple(rec.markers))


async def _answers(world: World, rid: int) -> dict[str, Any]:
    async with setup_uow(world.db) as s:
        row = await s.get(QuestionnaireAnswerSet, rid)
        return dict(row.answers or {}) if row is not None else {}


@probe(QR, R)
async def _response_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/responses/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == str(t.id))


@probe(QR, S, collection=True)
async def _patient_summary(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(
        f"{API}/responses", params={"patient_id": t.patient_id}, headers=caller.headers
    )
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(QR, C)
async def _response_start(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:
        before = int(
            await s.scalar(
                select(func.count()).select_from(QuestionnaireAnswerSet).filter_by(patient_id=t.patient_id)
            )
            or 0
        )
    r = await world.client.post(
        f"{API}/responses",
        json={"patient_id": t.patient_id, "questionnaire": "phq-9"},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        after = int(
            await s.scalar(
                select(func.count()).select_from(QuestionnaireAnswerSet).filter_by(patient_id=t.patient_id)
            )
            or 0
        )
    # Starting again resumes the open PHQ-9: the write took effect if one exists now that the call made or
    # had made before.
    return Outcome(
        r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, _ok(r) and after >= max(before, 1)
    )


@probe(QR, UPD)
async def _response_answer(world: World, caller: Caller, t: Target) -> Outcome:
    current = (await _answers(world, t.id)).get("gad-7-2")
    value = CODES[2] if current != CODES[2] else CODES[3]
    r = await world.client.post(
        f"{API}/responses/{t.id}/answers", json={"answers": {"gad-7-2": value}}, headers=caller.headers
    )
    effect = (await _answers(world, t.id)).get("gad-7-2") == value
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, effect)


absent(QR, D, "DELETE", f"{API}/responses/{{id}}", reason="answers are part of the record: kept, not deleted")
absent(
    QR,
    E,
    "GET",
    f"{API}/responses/{{id}}/$export",
    reason="responses and scores leave in the patient's export (Patient $export, section questionnaires)",
)
