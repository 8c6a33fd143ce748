"""Probes for the foundation's resource types (identity, access, audit): how each action is performed over
the REST API on a target, whether the target shows in the response, and whether a write took effect.

Other domains add `tests/<domain>/probes.py` in the same shape (see tests/access/matrix_kit.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update

from telecare.access.models import BreakGlassGrant
from telecare.access.policy import Action, Resource
from telecare.core.time import utc_now
from telecare.identity.models import ApiToken, CareTeamMember, Patient, User
from tests.access.matrix_kit import (
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
)
from tests.factories import Account, setup_uow, token_for

P, CT, PR, U, TK, AU, AG, BG = (
    Resource.PATIENT,
    Resource.CARE_TEAM,
    Resource.PRACTITIONER,
    Resource.USER,
    Resource.API_TOKEN,
    Resource.AUDIT_EVENT,
    Resource.AGGREGATE,
    Resource.BREAK_GLASS,
)
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1"


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


# ---- targets ----------------------------------------------------------------------------------------------


async def _patient_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]
    return Target(rec.id, rec.id, rec.markers, {"org_id": rec.org_id, "mrn": rec.mrn})


targets(P)(_patient_target)
targets(CT)(_patient_target)
targets(AU)(_patient_target)


@targets(PR)
async def _practitioner_target(world: World, caller: Caller, rel: Rel) -> Target:
    if rel is Rel.OWN:
        acc = caller.account if caller.account and caller.account.practitioner_id else world.a.spare
    else:
        acc = world.a.bystander if rel is Rel.SAME_ORG else world.b.bystander
    return Target(acc.practitioner_id)


def _user_account(world: World, caller: Caller, rel: Rel) -> Account:
    if rel is Rel.OWN:
        return caller.account or world.a.bystander
    return world.a.bystander if rel is Rel.SAME_ORG else world.b.bystander


@targets(U)
async def _user_target(world: World, caller: Caller, rel: Rel) -> Target:
    acc = _user_account(world, caller, rel)
    return Target(acc.user_id, data={"account": acc, "org_id": acc.org_id})


def _token_id(token: str) -> int:
    return int(token.removeprefix("tc_").split("_", 1)[0])


@targets(TK)
async def _token_target(world: World, caller: Caller, rel: Rel) -> Target:
    # Another user's token: an informatics clerk, whose grants an admin's cover (a clinician's would not be
    # issued over the API at all: test_idor.test_admin_cannot_mint_a_clinician_token...).
    if rel is Rel.OWN:
        acc = caller.account or world.a.clerk
    else:
        acc = world.a.clerk if rel is Rel.SAME_ORG else world.b.clerk
    key = f"token:{acc.user_id}"
    if caller.role is not None and rel is Rel.OWN:
        token_id = _token_id(world.a.tokens[caller.role])
    else:
        if key not in world.extra:
            world.extra[key] = _token_id(await token_for(world.db, acc, ["user/Patient.r"]))
        token_id = world.extra[key]
    return Target(token_id, data={"account": acc})


@targets(AG)
async def _aggregate_target(world: World, caller: Caller, rel: Rel) -> Target:
    return Target(None, data={"state": world.b.own.state if rel is Rel.OTHER_ORG else world.a.own.state})


@targets(BG)
async def _grant_target(world: World, caller: Caller, rel: Rel) -> Target:
    party = world.b if rel is Rel.OTHER_ORG else world.a
    acc = party.bystander
    if rel is Rel.OWN and caller.account is not None and caller.account.practitioner_id:
        acc = caller.account
    async with setup_uow(world.db) as s:
        grant_id = (
            await s.execute(
                select(func.max(BreakGlassGrant.id)).where(
                    BreakGlassGrant.user_id == acc.user_id, BreakGlassGrant.patient_id == party.other.id
                )
            )
        ).scalar_one()
    patient = {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.other}[rel]
    return Target(grant_id, patient.id, patient.markers, {"patient_id": patient.id})


# ---- Patient ----------------------------------------------------------------------------------------------


@probe(P, R)
async def _patient_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(P, S, collection=True)
async def _patient_search(world: World, caller: Caller, t: Target) -> Outcome:
    # Searching by the target's exact MRN: an out-of-reach patient must not be found (no search oracle).
    r = await world.client.get(f"{API}/patients", params={"mrn": t.data["mrn"]}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


def _new_patient_body(n: int) -> dict[str, Any]:
    return {
        "mrn": f"NEW-{n}",
        "given_name": "Created",
        "family_name": f"Bycase{n}",
        "birth_date": "1980-01-01",
        "sex": "female",
        "state": "VT",
    }


async def _patient_exists(world: World, mrn: str) -> bool:
    async with setup_uow(world.db) as s:
        return (await s.execute(select(Patient.id).where(Patient.mrn == mrn))).first() is not None


@probe(P, C)
async def _patient_create(world: World, caller: Caller, t: Target) -> Outcome:
    body = _new_patient_body(next_case())
    if t.data["org_id"] != world.a.org_id:
        body["org_id"] = t.data["org_id"]  # mass assignment into another organization
    r = await world.client.post(f"{API}/patients", json=body, headers=caller.headers)
    return Outcome(
        r, _ok(r) and body_of(r).get("mrn") == body["mrn"], await _patient_exists(world, body["mrn"])
    )


@probe(P, UPD)
async def _patient_update(world: World, caller: Caller, t: Target) -> Outcome:
    city = f"City{next_case()}"
    r = await world.client.patch(f"{API}/patients/{t.id}", json={"city": city}, headers=caller.headers)
    async with setup_uow(world.db) as s:
        stored = (await s.execute(select(Patient.city).where(Patient.id == t.id))).scalar_one()
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, stored == city)


absent(P, D, "DELETE", "/api/v1/patients/{id}")


@probe(P, E)
async def _patient_export(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.id}/$export", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r)["patient"]["id"] == t.id)


# ---- CareTeam ---------------------------------------------------------------------------------------------


@probe(CT, R)
async def _care_team_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/patients/{t.id}/care-team", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r), "patient_id"))


absent(CT, S, "GET", "/api/v1/care-teams")


async def _spare_member(world: World, patient_id: int, *, present: bool) -> int | None:
    """Put the spare nurse on (or off) the patient's care team directly in the database."""
    prac = world.a.spare.practitioner_id
    async with setup_uow(world.db) as s:
        row = (
            await s.execute(
                select(CareTeamMember).where(
                    CareTeamMember.patient_id == patient_id, CareTeamMember.practitioner_id == prac
                )
            )
        ).scalar_one_or_none()
        if present and row is None:
            org = (await s.execute(select(Patient.org_id).where(Patient.id == patient_id))).scalar_one()
            row = CareTeamMember(org_id=org, patient_id=patient_id, practitioner_id=prac, role="spare")
            s.add(row)
            await s.flush()
        elif not present and row is not None:
            await s.execute(delete(CareTeamMember).where(CareTeamMember.id == row.id))
            return None
        return row.id if row is not None else None


@probe(CT, C)
async def _care_team_create(world: World, caller: Caller, t: Target) -> Outcome:
    assert t.id is not None
    await _spare_member(world, t.id, present=False)
    r = await world.client.post(
        f"{API}/patients/{t.id}/care-team",
        json={"practitioner_id": world.a.spare.practitioner_id},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        added = (
            await s.execute(
                select(CareTeamMember.id).where(
                    CareTeamMember.patient_id == t.id,
                    CareTeamMember.practitioner_id == world.a.spare.practitioner_id,
                )
            )
        ).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.id, added)


absent(CT, UPD, "PATCH", "/api/v1/patients/{patient_id}/care-team/1")


@probe(CT, D)
async def _care_team_delete(world: World, caller: Caller, t: Target) -> Outcome:
    assert t.id is not None
    member_id = await _spare_member(world, t.id, present=True)
    r = await world.client.delete(f"{API}/patients/{t.id}/care-team/{member_id}", headers=caller.headers)
    async with setup_uow(world.db) as s:
        gone = await s.get(CareTeamMember, member_id) is None
    return Outcome(r, None, gone)


absent(CT, E, "GET", "/api/v1/patients/{patient_id}/care-team/$export")

# ---- Practitioner -----------------------------------------------------------------------------------------


@probe(PR, R)
async def _practitioner_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/practitioners/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(PR, S, collection=True)
async def _practitioner_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/practitioners", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


absent(PR, C, "POST", "/api/v1/practitioners")
absent(PR, UPD, "PATCH", "/api/v1/practitioners/{id}")
absent(PR, D, "DELETE", "/api/v1/practitioners/{id}")
absent(PR, E, "GET", "/api/v1/practitioners/{id}/$export")

# ---- User -------------------------------------------------------------------------------------------------


@probe(U, R)
async def _user_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/users/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id)


@probe(U, S, collection=True)
async def _user_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/users", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(U, C)
async def _user_create(world: World, caller: Caller, t: Target) -> Outcome:
    email = f"created{next_case()}@newusers.org"
    body: dict[str, Any] = {
        "email": email,
        "display_name": "Created User",
        # A role every creator in the policy covers (admins may not mint clinical accounts:
        # tests/identity/test_findings.py); the matrix tests the organization boundary.
        "role": "informatics",
        "password": "a long enough password",
    }
    if t.data["org_id"] != world.a.org_id:
        body["org_id"] = t.data["org_id"]
    r = await world.client.post(f"{API}/users", json=body, headers=caller.headers)
    async with setup_uow(world.db) as s:
        exists = (await s.execute(select(User.id).where(User.email == email))).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("email") == email, exists)


@probe(U, UPD)
async def _user_update(world: World, caller: Caller, t: Target) -> Outcome:
    name = f"Renamed {next_case()}"
    r = await world.client.patch(f"{API}/users/{t.id}", json={"display_name": name}, headers=caller.headers)
    async with setup_uow(world.db) as s:
        stored = (await s.execute(select(User.display_name).where(User.id == t.id))).scalar_one()
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id, stored == name)


absent(U, D, "DELETE", "/api/v1/users/{id}")
absent(U, E, "GET", "/api/v1/users/{id}/$export")

# ---- ApiToken ---------------------------------------------------------------------------------------------

absent(TK, R, "GET", "/api/v1/tokens/{id}")


@probe(TK, S, collection=True)
async def _token_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/tokens", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(TK, C)
async def _token_create(world: World, caller: Caller, t: Target) -> Outcome:
    name = f"probe-{next_case()}"
    acc: Account = t.data["account"]
    r = await world.client.post(
        f"{API}/tokens",
        json={"user_id": acc.user_id, "name": name, "scopes": ["user/Patient.r"]},
        headers=caller.headers,
    )
    async with setup_uow(world.db) as s:
        made = (await s.execute(select(ApiToken.id).where(ApiToken.name == name))).first() is not None
    return Outcome(r, _ok(r) and body_of(r).get("user_id") == acc.user_id, made)


absent(TK, UPD, "PATCH", "/api/v1/tokens/{id}")


@probe(TK, D)
async def _token_delete(world: World, caller: Caller, t: Target) -> Outcome:
    acc: Account = t.data["account"]
    fresh = _token_id(await token_for(world.db, acc, ["user/Patient.r"]))
    r = await world.client.delete(f"{API}/tokens/{fresh}", headers=caller.headers)
    async with setup_uow(world.db) as s:
        revoked = (await s.execute(select(ApiToken.revoked_at).where(ApiToken.id == fresh))).scalar_one()
    return Outcome(r, None, revoked is not None)


absent(TK, E, "GET", "/api/v1/tokens/$export")

# ---- AuditEvent -------------------------------------------------------------------------------------------

absent(AU, R, "GET", "/api/v1/audit-events/{id}")


@probe(AU, S, collection=True)
async def _audit_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/audit-events", params={"patient_id": t.id}, headers=caller.headers)
    # Entries of refused requests name the id that was asked for; only successful accesses count as data.
    body = body_of(r)
    shown = _ok(r) and any(e.get("patient_id") == t.id and e.get("outcome") != "denied" for e in body)
    return Outcome(r, shown)


absent(AU, C, "POST", "/api/v1/audit-events")
absent(AU, UPD, "PATCH", "/api/v1/audit-events/{id}")
absent(AU, D, "DELETE", "/api/v1/audit-events/{id}")
absent(AU, E, "GET", "/api/v1/audit-events/$export")

# ---- Aggregate --------------------------------------------------------------------------------------------


@probe(AG, R, collection=True)
async def _aggregate_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/stats/patients-by-state", headers=caller.headers)
    return Outcome(r, _ok(r) and t.data["state"] in ids_in(body_of(r), "state"))


absent(AG, S, "GET", "/api/v1/stats")
absent(AG, C, "POST", "/api/v1/stats/patients-by-state")
absent(AG, UPD, "PATCH", "/api/v1/stats/patients-by-state")
absent(AG, D, "DELETE", "/api/v1/stats/patients-by-state")
absent(AG, E, "GET", "/api/v1/stats/patients-by-state/$export")

# ---- BreakGlass -------------------------------------------------------------------------------------------

absent(BG, R, "GET", "/api/v1/break-glass/{id}")


@probe(BG, S, collection=True)
async def _grant_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/break-glass", headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


@probe(BG, C)
async def _grant_create(world: World, caller: Caller, t: Target) -> Outcome:
    patient_id = t.data["patient_id"]
    user_id = caller.account.user_id if caller.account else world.a.bystander.user_id

    async def count() -> int:
        async with setup_uow(world.db) as s:
            return int(
                (
                    await s.execute(
                        select(func.count()).where(
                            BreakGlassGrant.user_id == user_id, BreakGlassGrant.patient_id == patient_id
                        )
                    )
                ).scalar_one()
            )

    before = await count()
    password = caller.account.password if caller.account else "no password"
    r = await world.client.post(
        f"{API}/patients/{patient_id}/break-glass",
        json={"reason": "matrix probe: emergency access", "password": password},
        headers=caller.headers,
    )
    made = await count() > before
    # End the grant at once so that it does not widen this caller's reach for the cases that follow.
    async with setup_uow(world.db) as s:
        await s.execute(
            update(BreakGlassGrant)
            .where(BreakGlassGrant.user_id == user_id, BreakGlassGrant.expires_at > utc_now())
            .values(expires_at=utc_now())
        )
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == patient_id, made)


absent(BG, UPD, "PATCH", "/api/v1/break-glass/{id}")
absent(BG, D, "DELETE", "/api/v1/break-glass/{id}")
absent(BG, E, "GET", "/api/v1/break-glass/$export")
