"""Authorization-matrix probes for e-consults (see tests/access/matrix_kit.py): consults (ServiceRequest)
and specialty queues (ConsultQueue).

The world gets, per organization, a "team" queue whose specialists are every clinician caller, holding a
consult about the party's own patient; an "other" queue whose only specialist is the bystander physician,
holding a consult about the party's other patient (requested by the bystander), so no caller reaches it;
and a "spare" queue without consults that the queue probes add members to. Each consult's question carries
a marker only it holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.econsult.models import Consult, ConsultNote, ConsultQueue, ConsultQueueMember
from tests.access.matrix_kit import (
    CLINICAL,
    Caller,
    Outcome,
    Party,
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

EC, QUEUE = Resource.ECONSULT, Resource.CONSULT_QUEUE
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/econsult"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


def _marker(patient_id: int) -> str:
    return f"Consult{patient_id}zq"


@world_setup
async def _econsult_world(world: World) -> None:
    now = utc_now()
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            queues = {}
            for slug in ("team", "other", "spare"):
                queue = ConsultQueue(
                    org_id=party.org_id, specialty=f"probe-{slug}", name=f"{slug.title()} queue"
                )
                s.add(queue)
                await s.flush()
                queues[slug] = queue.id
            for role in CLINICAL:
                s.add(
                    ConsultQueueMember(
                        org_id=party.org_id, queue_id=queues["team"], user_id=party.accounts[role].user_id
                    )
                )
            s.add(
                ConsultQueueMember(
                    org_id=party.org_id, queue_id=queues["other"], user_id=party.bystander.user_id
                )
            )
            physician = party.accounts[CLINICAL[0]]
            for rec, slug, requester in (
                (party.own, "team", physician),
                (party.other, "other", party.bystander),
            ):
                consult = Consult(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    queue_id=queues[slug],
                    requester_user_id=requester.user_id,
                    question=f"Is the murmur significant? {_marker(rec.id)}",
                    summary="Systolic murmur 2/6, no symptoms.",
                    consent_at=now,
                    requested_at=now,
                    due_at=now,
                )
                s.add(consult)
                await s.flush()
                world.extra[f"ec:consult:{rec.id}"] = consult.id
            world.extra[f"ec:queues:{party.org_id}"] = queues


def _patient_of(world: World, rel: Rel) -> Any:
    return {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]


@targets(EC)
async def _consult_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = _patient_of(world, rel)
    team_queue = world.extra[f"ec:queues:{world.a.org_id}"]["team"]
    return Target(
        world.extra[f"ec:consult:{rec.id}"], rec.id, (*rec.markers, _marker(rec.id)), {"queue": team_queue}
    )


@targets(QUEUE)
async def _queue_target(world: World, caller: Caller, rel: Rel) -> Target:
    party: Party = world.b if rel is Rel.OTHER_ORG else world.a
    queue_id = world.extra[f"ec:queues:{party.org_id}"]["spare"]
    return Target(queue_id, data={"org_id": party.org_id, "user_id": party.spare.user_id})


# ---- ServiceRequest ---------------------------------------------------------------------------------------


@probe(EC, R)
async def _consult_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/consults/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(EC, S, collection=True)
async def _consult_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/consults", params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


async def _count(world: World, model: Any, **where: Any) -> int:
    async with setup_uow(world.db) as s:
        return int(await s.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0)


@probe(EC, C)
async def _consult_request(world: World, caller: Caller, t: Target) -> Outcome:
    question = f"probe question {next_case()}"
    r = await world.client.post(
        f"{API}/consults",
        data={
            "patient_id": str(t.patient_id),
            "queue_id": str(t.data["queue"]),
            "question": question,
            "summary": "History attached.",
            "verbal_consent": "true",
        },
        headers=caller.headers,
    )
    made = await _count(world, Consult, question=question, patient_id=t.patient_id) == 1
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made)


@probe(EC, UPD)
async def _consult_note(world: World, caller: Caller, t: Target) -> Outcome:
    text = f"probe note {next_case()}"
    r = await world.client.post(f"{API}/consults/{t.id}/notes", json={"body": text}, headers=caller.headers)
    made = await _count(world, ConsultNote, body=text, consult_id=t.id) == 1
    return Outcome(r, _ok(r) and body_of(r).get("consult_id") == t.id, made)


absent(
    EC,
    D,
    "DELETE",
    f"{API}/consults/{{id}}",
    reason="consults are part of the record: withdrawn, not deleted",
)
absent(
    EC,
    E,
    "GET",
    f"{API}/consults/{{id}}/$export",
    reason="consults leave in the patient's export (Patient $export, section econsults)",
)

# ---- ConsultQueue -----------------------------------------------------------------------------------------


@probe(QUEUE, R)
async def _queue_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/queues/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(QUEUE, S, collection=True)
async def _queue_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/queues", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(QUEUE, C)
async def _queue_create(world: World, caller: Caller, t: Target) -> Outcome:
    specialty = f"probe-new-{next_case()}"
    r = await world.client.post(
        f"{API}/queues",
        json={"specialty": specialty, "name": "Probe specialty", "org_id": t.data["org_id"]},
        headers=caller.headers,
    )
    made = await _count(world, ConsultQueue, specialty=specialty, org_id=t.data["org_id"]) == 1
    return Outcome(r, _ok(r) and body_of(r).get("specialty") == specialty, made)


@probe(QUEUE, UPD)
async def _queue_add_member(world: World, caller: Caller, t: Target) -> Outcome:
    async with setup_uow(world.db) as s:
        await s.execute(
            delete(ConsultQueueMember).where(
                ConsultQueueMember.queue_id == t.id, ConsultQueueMember.user_id == t.data["user_id"]
            )
        )
    r = await world.client.post(
        f"{API}/queues/{t.id}/members", json={"user_id": t.data["user_id"]}, headers=caller.headers
    )
    effect = await _count(world, ConsultQueueMember, queue_id=t.id, user_id=t.data["user_id"]) == 1
    return Outcome(r, _ok(r), effect)


absent(QUEUE, D, "DELETE", f"{API}/queues/{{id}}", reason="queues are kept (their consults name them)")
absent(QUEUE, E, "GET", f"{API}/queues/{{id}}/$export", reason="configuration, not health data")
