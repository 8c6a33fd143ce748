"""Authorization-matrix probes for triage encounters (Resource.TRIAGE; see tests/access/matrix_kit.py).

The world gives each patient of each organization an in-progress fever triage. The probes read an
encounter, list a patient's encounters, start one (create: counted before and after) and save an answer
(update: the answer reset before each case). The answers used reach no red flag, so no probe raises a task
(which would add a care relationship). Each patient's markers are its MRN and names, which no body carries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.triage.models import TriageEncounter, TriageMode, TriageStatus
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

TR = Resource.TRIAGE
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/triage/encounters"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


@world_setup
async def _triage_world(world: World) -> None:
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            for rec in (party.own, party.other):
                row = TriageEncounter(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    mode=TriageMode.NURSE,
                    protocol_id="adult-fever",
                    protocol_version="0.1.0",
                    started_by_user_id=party.bystander.user_id,
                    started_at=utc_now(),
                    location_state="PA",
                    location_detail="probe",
                    callback_phone="",
                    status=TriageStatus.IN_PROGRESS,
                    answers={},
                    red_flags=[],
                    sbar={},
                )
                s.add(row)
                await s.flush()
                world.extra[f"triage:{rec.id}"] = row.id


@targets(TR)
async def _triage_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(world.extra[f"triage:{rec.id}"], rec.id, tuple(rec.markers))


async def _count(world: World, patient_id: int) -> int:
    async with setup_uow(world.db) as s:
        return int(
            await s.scalar(select(func.count()).select_from(TriageEncounter).filter_by(patient_id=patient_id))
            or 0
        )


@probe(TR, R)
async def _triage_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(TR, S, collection=True)
async def _triage_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(API, params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(TR, C)
async def _triage_start(world: World, caller: Caller, t: Target) -> Outcome:
    before = await _count(world, t.patient_id)
    r = await world.client.post(
        API,
        json={
            "patient_id": t.patient_id,
            "protocol": "adult-fever",
            "location_state": "PA",
            "location_detail": "probe",
        },
        headers=caller.headers,
    )
    after = await _count(world, t.patient_id)
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, after == before + 1)


@probe(TR, UPD)
async def _triage_answer(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:
        await s.execute(
            update(TriageEncounter)
            .where(TriageEncounter.id == t.id)
            .values(answers={}, status=TriageStatus.IN_PROGRESS, disposition=None, completed_at=None)
        )
    r = await world.client.post(
        f"{API}/{t.id}/answers", json={"answers": {"confused": "no"}}, headers=caller.headers
    )
    async with setup_uow(world.db) as s:
        answers = await s.scalar(select(TriageEncounter.answers).where(TriageEncounter.id == t.id))
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, answers == {"confused": "no"})


absent(TR, D, "DELETE", f"{API}/{{id}}", reason="a triage is part of the record: kept, not deleted")
absent(
    TR,
    E,
    "GET",
    f"{API}/{{id}}/$export",
    reason="encounters leave in the patient's export (Patient $export, section triage)",
)
