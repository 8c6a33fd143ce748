"""Authorization-matrix probes for secure messaging (see tests/access/matrix_kit.py): conversations
(Communication) and team inboxes (Inbox).

The world gets, per organization, a "team" inbox whose members are every clinician caller, holding a thread
of the party's own patient; an "other" inbox whose only member is the bystander physician, holding a thread
of the party's other patient (so no caller reaches it through an inbox); and a "spare" inbox without
threads that the inbox probes add members to. Each thread's first message carries a marker only it holds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.identity.models import Role
from telecare.messaging.models import Inbox, InboxKind, InboxMember, Message, Thread
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

COMM, INBOX = Resource.COMMUNICATION, Resource.INBOX
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/messaging"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


def _marker(patient_id: int) -> str:
    return f"Msg{patient_id}zq"


@world_setup
async def _messaging_world(world: World) -> None:
    now = utc_now()
    async with setup_uow(world.db) as s:
        for party in (world.a, world.b):
            inboxes = {}
            for slug in ("team", "other", "spare"):
                inbox = Inbox(
                    org_id=party.org_id, slug=slug, name=f"{slug.title()} inbox", kind=InboxKind.PRIMARY_CARE
                )
                s.add(inbox)
                await s.flush()
                inboxes[slug] = inbox.id
            for role in CLINICAL:
                s.add(
                    InboxMember(
                        org_id=party.org_id, inbox_id=inboxes["team"], user_id=party.accounts[role].user_id
                    )
                )
            s.add(
                InboxMember(org_id=party.org_id, inbox_id=inboxes["other"], user_id=party.bystander.user_id)
            )
            patient_user = party.accounts[Role.PATIENT].user_id
            for rec, slug in ((party.own, "team"), (party.other, "other")):
                thread = Thread(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    inbox_id=inboxes[slug],
                    subject="Question about my medication",
                    patient_initiated=True,
                    started_by_user_id=patient_user if rec is party.own else party.bystander.user_id,
                    created_at=now,
                    last_message_at=now,
                )
                s.add(thread)
                await s.flush()
                s.add(
                    Message(
                        org_id=party.org_id,
                        thread_id=thread.id,
                        patient_id=rec.id,
                        sender_user_id=thread.started_by_user_id,
                        from_patient=rec is party.own,
                        body=f"Is it fine to take it with food? {_marker(rec.id)}",
                        created_at=now,
                    )
                )
                world.extra[f"msg:thread:{rec.id}"] = thread.id
            world.extra[f"msg:inboxes:{party.org_id}"] = inboxes


def _patient_of(world: World, rel: Rel) -> Any:
    return {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]


@targets(COMM)
async def _thread_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = _patient_of(world, rel)
    return Target(world.extra[f"msg:thread:{rec.id}"], rec.id, (*rec.markers, _marker(rec.id)))


@targets(INBOX)
async def _inbox_target(world: World, caller: Caller, rel: Rel) -> Target:
    # Inboxes belong to an organization: own and same-organization are organization A's spare inbox.
    party: Party = world.b if rel is Rel.OTHER_ORG else world.a
    inbox_id = world.extra[f"msg:inboxes:{party.org_id}"]["spare"]
    return Target(inbox_id, data={"org_id": party.org_id, "user_id": party.spare.user_id})


# ---- Communication ----------------------------------------------------------------------------------------


@probe(COMM, R)
async def _thread_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/threads/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(COMM, S, collection=True)
async def _thread_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/threads", params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


async def _messages_with(world: World, thread_id: int, text: str) -> int:
    async with setup_uow(world.db) as s:
        n = await s.scalar(
            select(func.count(Message.id)).where(Message.thread_id == thread_id, Message.body == text)
        )
        return int(n or 0)


@probe(COMM, C)
async def _reply(world: World, caller: Caller, t: Target) -> Outcome:
    assert t.id is not None
    text = f"probe reply {next_case()}"
    r = await world.client.post(f"{API}/threads/{t.id}/messages", data={"body": text}, headers=caller.headers)
    shown = _ok(r) and body_of(r).get("thread_id") == t.id
    return Outcome(r, shown, await _messages_with(world, t.id, text) == 1)


@probe(COMM, UPD)
async def _mark_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.post(f"{API}/threads/{t.id}/read", json={}, headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("thread_id") == t.id)


absent(
    COMM,
    D,
    "DELETE",
    f"{API}/threads/{{id}}",
    reason="conversations are part of the record: they are closed, never deleted",
)
absent(
    COMM,
    E,
    "GET",
    f"{API}/threads/{{id}}/$export",
    reason="conversations leave in the patient's export (Patient $export, section messaging)",
)

# ---- Inbox ------------------------------------------------------------------------------------------------


@probe(INBOX, R)
async def _inbox_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/inboxes/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(INBOX, S, collection=True)
async def _inbox_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/inboxes", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


async def _inbox_count(world: World, slug: str, org_id: int) -> int:
    async with setup_uow(world.db) as s:
        n = await s.scalar(select(func.count(Inbox.id)).where(Inbox.slug == slug, Inbox.org_id == org_id))
        return int(n or 0)


@probe(INBOX, C)
async def _inbox_create(world: World, caller: Caller, t: Target) -> Outcome:
    slug = f"probe-{next_case()}"
    r = await world.client.post(
        f"{API}/inboxes",
        json={"name": "Probe team", "slug": slug, "kind": "pharmacy", "org_id": t.data["org_id"]},
        headers=caller.headers,
    )
    made = await _inbox_count(world, slug, t.data["org_id"]) == 1
    return Outcome(r, _ok(r) and body_of(r).get("slug") == slug, made)


async def _is_member(world: World, inbox_id: int, user_id: int) -> bool:
    async with setup_uow(world.db) as s:
        row = await s.execute(
            select(InboxMember.id).where(InboxMember.inbox_id == inbox_id, InboxMember.user_id == user_id)
        )
        return row.first() is not None


@probe(INBOX, UPD)
async def _inbox_add_member(world: World, caller: Caller, t: Target) -> Outcome:
    assert t.id is not None
    async with setup_uow(world.db) as s:  # start from a spare inbox without the member
        from sqlalchemy import delete

        await s.execute(
            delete(InboxMember).where(InboxMember.inbox_id == t.id, InboxMember.user_id == t.data["user_id"])
        )
    r = await world.client.post(
        f"{API}/inboxes/{t.id}/members", json={"user_id": t.data["user_id"]}, headers=caller.headers
    )
    effect = await _is_member(world, t.id, t.data["user_id"])
    return Outcome(r, _ok(r), effect)


absent(
    INBOX,
    D,
    "DELETE",
    f"{API}/inboxes/{{id}}",
    reason="inboxes are kept (their threads name them); members are removed instead",
)
absent(
    INBOX,
    E,
    "GET",
    f"{API}/inboxes/{{id}}/$export",
    reason="configuration, not health data: nothing to export",
)
