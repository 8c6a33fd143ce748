"""Authorization-matrix probes for education assignments (Resource.EDUCATION; see tests/access/matrix_kit.py).

The world gives each patient of each organization the blood-pressure article. The probes read an
assignment, list a patient's assignments, give an article (create: the fever article, removed before each
case so that every case writes afresh) and record a reading (update: the count reset before each case).
Each patient's markers are its MRN and names, which no body carries: assignments name the patient by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.education.models import EducationAssignment
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

ED = Resource.EDUCATION
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/education/assignments"
GIVEN, PROBED = "high-blood-pressure-at-home", "fever-in-adults"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


@world_setup
async def _education_world(world: World) -> None:
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            by = party.bystander.user_id
            for rec in (party.own, party.other):
                row = EducationAssignment(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    article_slug=GIVEN,
                    note="",
                    source_kind="clinician",
                    source_id="",
                    assigned_by_user_id=by,
                    assigned_at=utc_now(),
                    read_count=0,
                )
                s.add(row)
                await s.flush()
                world.extra[f"edu:{rec.id}"] = row.id


@targets(ED)
async def _education_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(world.extra[f"edu:{rec.id}"], rec.id, tuple(rec.markers))


@probe(ED, R)
async def _education_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(ED, S, collection=True)
async def _education_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(API, params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(ED, C)
async def _education_give(world: World, caller: Caller, t: Target) -> Outcome:
    where = (EducationAssignment.patient_id == t.patient_id, EducationAssignment.article_slug == PROBED)
    async with setup_uow(world.db) as s:
        await s.execute(delete(EducationAssignment).where(*where))
    r = await world.client.post(
        f"/api/v1/patients/{t.patient_id}/education", json={"article": PROBED}, headers=caller.headers
    )
    async with setup_uow(world.db) as s:
        made = int(await s.scalar(select(func.count()).select_from(EducationAssignment).where(*where)) or 0)
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made == 1)


@probe(ED, UPD)
async def _education_record_reading(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:
        await s.execute(
            update(EducationAssignment)
            .where(EducationAssignment.id == t.id)
            .values(read_count=0, first_read_at=None, last_read_at=None)
        )
    r = await world.client.post(f"{API}/{t.id}/read", headers=caller.headers)
    async with setup_uow(world.db) as s:
        count = await s.scalar(select(EducationAssignment.read_count).where(EducationAssignment.id == t.id))
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, count == 1)


absent(
    ED,
    D,
    "DELETE",
    f"{API}/{{id}}",
    reason="what a patient was given is part of the record: kept, not deleted",
)
absent(
    ED,
    E,
    "GET",
    f"{API}/{{id}}/$export",
    reason="assignments leave in the patient's export (Patient $export, section education)",
)
