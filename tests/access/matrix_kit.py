"""The authorization matrix kit: a fixture world, targets and a registry of probes.

The matrix (tests/access/test_matrix.py) is generated from `telecare.access.policy.POLICY`: every caller
(the 8 roles and an unauthenticated client) x every `Resource` x every `Action` x relationship (own or
assigned, same organization but unrelated, other organization). Expected outcomes come from the policy table
alone; how to perform an action over the REST API comes from the probes registered here.

Extending it (a new domain): add your `Resource` and grants to POLICY, then create `tests/<domain>/probes.py`
(found automatically) that
  1. optionally registers `@world_setup` to add your rows to the world once (e.g. an Observation for each
     of the world's patients), storing ids in `world.extra`;
  2. registers `@targets(Resource.X)`: given the world, the caller and the relationship, the record to act
     on (its id, its patient, and strings that would prove it leaked: MRN, names, ...);
  3. registers one `@probe(Resource.X, Action.Y)` per route (perform the request; report whether the target
     is visible in the body and, for writes, whether the write took effect), or `absent(...)` naming the
     conventional request for an action that has no route (the matrix asserts it is refused or absent),
     with the reason there is none;
  4. optionally registers `@parity(Resource.X, Action.Y)`: the same action through another API surface
     (the FHIR API next to the REST API); the matrix holds every surface to the same expectation.
A (resource, action) with neither fails `test_every_cell_has_a_probe_or_is_declared_absent`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
from sqlalchemy import func, select

from telecare.access.models import BreakGlassGrant
from telecare.access.policy import PATIENT_COMPARTMENT, Action, Reach, Resource, allowed_reach
from telecare.audit.models import AuditEntry
from telecare.auth.dependencies import CSRF_HEADER, SESSION_COOKIE
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Role
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

CLINICAL = (Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST)
_case_seq = itertools.count(1)


class Rel(enum.StrEnum):
    OWN = "own"  # the caller's own record, or a patient on the caller's care team
    SAME_ORG = "same_org"  # same organization, no relationship
    OTHER_ORG = "other_org"  # another organization


class Expect(enum.StrEnum):
    ALLOW = "allow"  # 2xx, the target is in the body, writes take effect
    FILTER = "filter"  # collections: 2xx but the target is absent
    DENY = "deny"  # refused (401/403/404/405/422), the target is absent, writes take no effect


@dataclass
class PatientRec:
    id: int
    org_id: int
    mrn: str
    given_name: str
    family_name: str
    birth_date: date
    phone: str
    state: str

    @property
    def markers(self) -> tuple[str, ...]:
        """Strings that can only come from this patient's record."""
        return (self.mrn, self.given_name, self.family_name, self.birth_date.isoformat(), self.phone)


@dataclass
class Party:
    """One organization's population: a user per role, two patients, bystander clinicians."""

    org_id: int
    accounts: dict[Role, Account]
    tokens: dict[Role, str]
    sessions: dict[Role, dict[str, str]]  # web-session cookie and CSRF header, per role
    own: PatientRec  # the patient user's record; on the care team of every clinician above
    other: PatientRec  # on the bystander's care team only
    bystander: Account  # a physician who is never a caller
    spare: Account  # a nurse added to and removed from care teams by the probes
    clerk: Account  # an informatics user who is never a caller (API-token targets an admin may serve)
    markers: tuple[str, ...]  # emails, names and NPIs of this party's users (org-level leak markers)


@dataclass
class World:
    db: Database
    client: httpx.AsyncClient
    a: Party  # callers come from here
    b: Party  # the other organization
    extra: dict[str, Any] = field(default_factory=dict)  # per-domain rows (see world_setup)

    def patients(self) -> list[PatientRec]:
        return [self.a.own, self.a.other, self.b.own, self.b.other]


@dataclass(frozen=True)
class Caller:
    role: Role | None  # None: unauthenticated
    account: Account | None
    headers: dict[str, str]

    @property
    def label(self) -> str:
        return str(self.role) if self.role else "anonymous"


@dataclass
class Target:
    """The record a probe acts on."""

    id: int | None
    patient_id: int | None = None
    markers: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    response: httpx.Response
    shown: bool  # the target is visible in the response body
    effect: bool | None = None  # writes: whether the change is in the database afterwards


ProbeFn = Callable[[World, Caller, Target], Awaitable[Outcome]]
TargetFn = Callable[[World, Caller, Rel], Awaitable[Target]]
SetupFn = Callable[[World], Awaitable[None]]


@dataclass(frozen=True)
class Probe:
    resource: Resource
    action: Action
    perform: ProbeFn | None  # None: no route; `absent_request` is sent instead
    collection: bool = False  # a list/search/aggregate: an uncovered relationship filters, not denies
    absent_request: tuple[str, str] | None = None  # (method, path template with {id} / {patient_id})
    reason: str = ""  # absent: why there is no route


PROBES: dict[tuple[Resource, Action], Probe] = {}
PARITY: dict[tuple[Resource, Action], list[Probe]] = {}  # the same action through other API surfaces
TARGETS: dict[Resource, TargetFn] = {}
WORLD_SETUPS: list[SetupFn] = []


def probe(resource: Resource, action: Action, *, collection: bool = False) -> Callable[[ProbeFn], ProbeFn]:
    def register(fn: ProbeFn) -> ProbeFn:
        key = (resource, action)
        assert key not in PROBES, f"two probes for {key}"
        PROBES[key] = Probe(resource, action, fn, collection=collection)
        return fn

    return register


def absent(resource: Resource, action: Action, method: str, path: str, *, reason: str = "") -> None:
    """Declare that (resource, action) has no route; the matrix sends `method path` and expects refusal."""
    key = (resource, action)
    assert key not in PROBES, f"two probes for {key}"
    PROBES[key] = Probe(resource, action, None, absent_request=(method, path), reason=reason)


def parity(resource: Resource, action: Action, *, collection: bool = False) -> Callable[[ProbeFn], ProbeFn]:
    """Register the same action through another API surface (e.g. FHIR next to REST): each case runs it on
    the same target and asserts it like the main probe (statuses, body, effect, leaks)."""

    def register(fn: ProbeFn) -> ProbeFn:
        PARITY.setdefault((resource, action), []).append(Probe(resource, action, fn, collection=collection))
        return fn

    return register


def targets(resource: Resource) -> Callable[[TargetFn], TargetFn]:
    def register(fn: TargetFn) -> TargetFn:
        TARGETS[resource] = fn
        return fn

    return register


def world_setup(fn: SetupFn) -> SetupFn:
    WORLD_SETUPS.append(fn)
    return fn


# ---- expectations, from the policy table alone ----------------------------------------------------------


def expectation(
    role: Role | None, resource: Resource, action: Action, rel: Rel, *, collection: bool
) -> Expect:
    if role is None:
        return Expect.DENY
    reach = allowed_reach(role, resource, action)
    if reach is None:
        return Expect.DENY
    # OWN reaches the caller's own record, CARE the patients on the caller's care team (the OWN target for a
    # clinician), ORG the whole organization. Nothing reaches another organization.
    covered = rel is Rel.OWN or (rel is Rel.SAME_ORG and reach is Reach.ORG)
    if covered:
        return Expect.ALLOW
    return Expect.FILTER if collection else Expect.DENY


def patient_reach(world: World, role: Role | None, resource: Resource, action: Action) -> set[int]:
    """The world's patients `role` may reach for (resource, action) according to the policy table."""
    if role is None:
        return set()
    reach = allowed_reach(role, resource, action)
    if reach is None:
        return set()
    if reach is Reach.ORG:
        return {world.a.own.id, world.a.other.id}
    if reach is Reach.CARE:
        return {world.a.own.id} if role in CLINICAL else set()
    return {world.a.own.id} if role is Role.PATIENT else set()


def leaks(world: World, caller: Caller, probe_: Probe, response: httpx.Response) -> list[str]:
    """Anything in the body the caller may not see: another organization's people, or a patient outside
    the caller's reach (by MRN, name, birth date or phone, or by id under a `patient_id` key)."""
    text = response_text(response)
    found = [f"org B marker {m!r}" for m in world.b.markers if m in text]
    readable = patient_reach(world, caller.role, Resource.PATIENT, Action.READ) | patient_reach(
        world, caller.role, Resource.PATIENT, Action.SEARCH
    )
    ids_ok = set(readable)
    if probe_.resource in PATIENT_COMPARTMENT or probe_.resource in (
        Resource.AUDIT_EVENT,
        Resource.BREAK_GLASS,
    ):
        ids_ok |= patient_reach(world, caller.role, probe_.resource, probe_.action)
    for patient in world.patients():
        if patient.id not in readable:
            found += [f"patient {patient.id} marker {m!r}" for m in patient.markers if m in text]
    try:
        body = response.json()
    except ValueError:
        body = None
    for key, value in _walk(body):
        if key == "patient_id" and isinstance(value, int):
            known = {p.id for p in world.patients()}
            if value in known and value not in ids_ok:
                found.append(f"patient_id {value}")
    return found


def response_text(response: httpx.Response) -> str:
    """The body without echoes of the caller's own query values (a FHIR searchset's `self` link repeats the
    search it answers): what the caller sent is no disclosure."""
    text = response.text
    for _, value in response.request.url.params.multi_items():
        if len(value) >= 4:
            for form in {value, quote(value, safe=""), quote_plus(value)}:
                text = text.replace(form, "")
    return text


def _walk(node: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        if node.get("outcome") == "denied":
            return  # an audit entry of a refused request: it echoes the id that was asked for, no data
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
        if "mrn" in node and "id" in node and "patient_id" not in node:  # a serialized patient record
            yield "patient_id", node["id"]
        if node.get("resourceType") == "Patient" and str(node.get("id", "")).isdigit():  # FHIR Patient
            yield "patient_id", int(node["id"])
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("Patient/") and ref[8:].isdigit():  # FHIR reference
            yield "patient_id", int(ref[8:])
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def ids_in(body: Any, key: str = "id") -> set[Any]:
    """Values of `key` in a list body, a page (`items`) or a single object."""
    if isinstance(body, dict) and isinstance(body.get("items"), list):
        body = body["items"]
    if isinstance(body, list):
        return {item.get(key) for item in body if isinstance(item, dict)}
    if isinstance(body, dict):
        return {body.get(key)}
    return set()


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def next_case() -> int:
    return next(_case_seq)


# ---- the world ---------------------------------------------------------------------------------------------


async def _party(db: Database, tag: str, state: str) -> Party:
    org = await make_org(db, name=f"Org {tag}", privacy_email=f"privacy@{tag}.test")
    accounts: dict[Role, Account] = {}
    for role in Role:
        if role is Role.PATIENT:
            continue
        accounts[role] = await make_user(db, org, role, email=f"{role}.{tag}@{tag}.test")
    own = await make_patient(
        db,
        org,
        state=state,
        with_login=True,
        mrn=f"MRN-{tag}-OWN",
        given_name=f"Ownagiven{tag}",
        family_name=f"Ownfamily{tag}",
        birth_date=date(1931, 2, 3) + timedelta(days=ord(tag[0])),
        phone=f"+1 555 {ord(tag[0]):03d} 0101",
        email=f"home.own@{tag}.test",
    )
    assert isinstance(own, Account)
    accounts[Role.PATIENT] = own
    other = await make_patient(
        db,
        org,
        state=state,
        mrn=f"MRN-{tag}-OTHER",
        given_name=f"Othergiven{tag}",
        family_name=f"Otherfamily{tag}",
        birth_date=date(1942, 5, 6) + timedelta(days=ord(tag[0])),
        phone=f"+1 555 {ord(tag[0]):03d} 0202",
        email=f"home.other@{tag}.test",
    )
    assert isinstance(other, int)
    bystander = await make_user(db, org, Role.PHYSICIAN, email=f"bystander.{tag}@{tag}.test")
    spare = await make_user(db, org, Role.NURSE, email=f"spare.{tag}@{tag}.test")
    clerk = await make_user(db, org, Role.INFORMATICS, email=f"clerk.{tag}@{tag}.test")
    assert own.patient_id is not None
    for role in CLINICAL:
        prac = accounts[role].practitioner_id
        assert prac is not None
        await add_to_care_team(db, patient_id=own.patient_id, practitioner_id=prac, org_id=org)
    assert bystander.practitioner_id is not None
    await add_to_care_team(db, patient_id=other, practitioner_id=bystander.practitioner_id, org_id=org)
    tokens = {role: await token_for(db, acc) for role, acc in accounts.items()}
    web_sessions = {role: await _web_session(db, acc) for role, acc in accounts.items()}

    def rec(pid: int, mrn: str, given: str, family: str, born: date, phone: str) -> PatientRec:
        return PatientRec(pid, org, mrn, given, family, born, phone, state)

    from telecare.identity.models import Patient, Practitioner, User

    async with setup_uow(db) as s:
        own_row = await s.get(Patient, own.patient_id)
        other_row = await s.get(Patient, other)
        assert own_row is not None
        assert other_row is not None
        users = (await s.execute(select(User).where(User.org_id == org))).scalars().all()
        for user in users:  # names that cannot be mistaken for another organization's
            user.display_name = f"{tag} {user.role} {user.id}"
        npis = (await s.execute(select(Practitioner.npi).where(Practitioner.org_id == org))).scalars().all()
        markers = (tag, *(u.email for u in users if tag.lower() not in u.email), *(n for n in npis if n))
        recs = [
            rec(r.id, r.mrn, r.given_name, r.family_name, r.birth_date, r.phone or "")
            for r in (own_row, other_row)
        ]
    return Party(org, accounts, tokens, web_sessions, recs[0], recs[1], bystander, spare, clerk, markers)


async def build_world(db: Database, client: httpx.AsyncClient) -> World:
    # Organization names double as leak markers: long and unlikely to occur by chance.
    a = await _party(db, "Alphawood", "VT")
    b = await _party(db, "Betaridge", "WY")
    world = World(db, client, a, b)
    # Audit entries about each patient (the AuditEvent targets) and expired emergency grants (BreakGlass).
    for party in (a, b):
        headers = bearer(party.tokens[Role.COORDINATOR])
        for patient in (party.own, party.other):
            r = await client.get(f"/api/v1/patients/{patient.id}", headers=headers)
            assert r.status_code == 200, r.text
        past = utc_now() - timedelta(hours=2)
        async with setup_uow(db) as s:
            for acc in [party.bystander, *(party.accounts[r] for r in CLINICAL)]:
                s.add(
                    BreakGlassGrant(
                        org_id=party.org_id,
                        user_id=acc.user_id,
                        patient_id=party.other.id,
                        reason="world setup: expired grant",
                        created_at=past,
                        expires_at=past + timedelta(minutes=60),
                    )
                )
    for setup in WORLD_SETUPS:
        await setup(world)
    return world


async def _web_session(db: Database, account: Account) -> dict[str, str]:
    """A signed-in browser session (TOTP completed for staff; the sign-in pages are tested in
    tests/identity): the cookie, and the CSRF header unsafe methods need."""
    from telecare.auth.sessions import create_web_session
    from telecare.identity.models import User

    async with setup_uow(db) as s:
        user = await s.get(User, account.user_id)
        assert user is not None
        new = await create_web_session(s, user, client_addr="127.0.0.1", mfa_verified=True)
    return {"cookie": f"{SESSION_COOKIE}={new.token}", CSRF_HEADER: new.csrf_token}


class Surface(enum.StrEnum):
    TOKEN = "token"  # an API bearer token with user/*.cruds
    SESSION = "session"  # the web session cookie (what the pages' scripts use), CSRF header on writes


def caller_for(world: World, role: Role | None, surface: Surface = Surface.TOKEN) -> Caller:
    if role is None:
        return Caller(None, None, {})
    if surface is Surface.SESSION:
        return Caller(role, world.a.accounts[role], dict(world.a.sessions[role]))
    return Caller(role, world.a.accounts[role], bearer(world.a.tokens[role]))


# ---- the read guard --------------------------------------------------------------------------------------


READS = frozenset({Action.READ, Action.SEARCH, Action.EXPORT})


async def audit_mark(world: World) -> int:
    async with world.db.unit_of_work() as s:
        return int((await s.execute(select(func.coalesce(func.max(AuditEntry.id), 0)))).scalar_one())


async def assert_read_audited(
    world: World, probe_: Probe, target: Target, since: int, outcome: Outcome
) -> None:
    """The read guard: every allowed read of a patient's data leaves an audit entry naming that patient and
    the resource type (docs/security.md), whichever surface served it."""
    if probe_.action not in READS or probe_.resource not in PATIENT_COMPARTMENT or target.patient_id is None:
        return
    async with world.db.unit_of_work() as s:
        found = (
            await s.execute(
                select(AuditEntry.id).where(
                    AuditEntry.id > since,
                    AuditEntry.patient_id == target.patient_id,
                    AuditEntry.resource_type == str(probe_.resource),
                    AuditEntry.outcome == "success",
                )
            )
        ).first()
    assert found is not None, (
        f"unaudited read: {probe_.action} {probe_.resource} of patient {target.patient_id} via "
        f"{outcome.response.request.method} {outcome.response.request.url.path}"
    )
