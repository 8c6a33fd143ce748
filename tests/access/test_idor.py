"""IDOR / BOLA seeds from docs/security.md#authorization-bug-classes, on a fresh database per test (both
backends): child records addressed with another patient's ids (OpenEMR #11853), list endpoints checking
each id (OpenEMR PR #7556), mass assignment of owner fields (OWASP API3), and deny taking precedence over any
allow (CVE-2026-33302)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from telecare.core.db import Database
from telecare.identity.models import CareTeamMember, Patient, Role, User
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    make_org,
    make_patient,
    make_user,
    token_for,
)


@dataclass
class Clinic:
    org: int
    coordinator: dict[str, str]
    doctor: Account
    doctor_headers: dict[str, str]
    mine: int  # on the doctor's care team
    theirs: int  # same organization, another team
    foreign: int  # another organization
    spare: Account  # a nurse to put on teams


async def _clinic(db: Database) -> Clinic:
    org = await make_org(db)
    other_org = await make_org(db)
    coordinator = await make_user(db, org, Role.COORDINATOR)
    doctor = await make_user(db, org, Role.PHYSICIAN)
    colleague = await make_user(db, org, Role.PHYSICIAN)
    foreign_doctor = await make_user(db, other_org, Role.PHYSICIAN)
    spare = await make_user(db, org, Role.NURSE)
    mine = await make_patient(db, org, family_name="Minefamily")
    theirs = await make_patient(db, org, family_name="Theirfamily")
    foreign = await make_patient(db, other_org, family_name="Foreignfamily")
    assert isinstance(mine, int)
    assert isinstance(theirs, int)
    assert isinstance(foreign, int)
    for patient, who, where in (
        (mine, doctor, org),
        (theirs, colleague, org),
        (foreign, foreign_doctor, other_org),
    ):
        assert who.practitioner_id is not None
        await add_to_care_team(db, patient_id=patient, practitioner_id=who.practitioner_id, org_id=where)
    return Clinic(
        org,
        bearer(await token_for(db, coordinator)),
        doctor,
        bearer(await token_for(db, doctor)),
        mine,
        theirs,
        foreign,
        spare,
    )


async def _members(db: Database, patient_id: int) -> list[int]:
    async with db.unit_of_work() as s:
        return list(
            (
                await s.execute(select(CareTeamMember.id).where(CareTeamMember.patient_id == patient_id))
            ).scalars()
        )


async def test_care_team_member_cannot_be_deleted_through_another_patient(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await _clinic(db)
    theirs_member = (await _members(db, c.theirs))[0]
    foreign_member = (await _members(db, c.foreign))[0]
    mine_members = await _members(db, c.mine)
    # The coordinator may edit care teams of the organization, but the member id must belong to the
    # patient in the path.
    for member in (theirs_member, foreign_member):
        r = await client.delete(f"/api/v1/patients/{c.mine}/care-team/{member}", headers=c.coordinator)
        assert r.status_code == 404, r.text
    assert await _members(db, c.theirs) == [theirs_member]
    assert await _members(db, c.foreign) == [foreign_member]
    assert await _members(db, c.mine) == mine_members
    # Through the foreign patient itself: outside the organization, so not found either.
    r = await client.delete(f"/api/v1/patients/{c.foreign}/care-team/{foreign_member}", headers=c.coordinator)
    assert r.status_code == 404
    assert await _members(db, c.foreign) == [foreign_member]
    # The matching pair works.
    r = await client.delete(f"/api/v1/patients/{c.theirs}/care-team/{theirs_member}", headers=c.coordinator)
    assert r.status_code == 204
    assert await _members(db, c.theirs) == []


async def test_care_team_cannot_take_another_organizations_practitioner(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await _clinic(db)
    other = await make_org(db)
    outsider = await make_user(db, other, Role.NURSE)
    before = await _members(db, c.mine)
    r = await client.post(
        f"/api/v1/patients/{c.mine}/care-team",
        json={"practitioner_id": outsider.practitioner_id},
        headers=c.coordinator,
    )
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["practitioner_id"]
    assert await _members(db, c.mine) == before


async def test_list_endpoints_return_and_count_only_reachable_records(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await _clinic(db)
    # LIKE wildcards, paging and filters never reach past the care team; `total` is no count oracle.
    for params in ({}, {"name": "%"}, {"name": "_"}, {"state": "PA"}, {"limit": 200, "offset": 0}):
        r = await client.get("/api/v1/patients", params=params, headers=c.doctor_headers)
        assert r.status_code == 200
        page = r.json()
        assert [p["id"] for p in page["items"]] == [c.mine], params
        assert page["total"] == 1
        assert "Theirfamily" not in r.text
        assert "Foreignfamily" not in r.text
    r = await client.get("/api/v1/patients", params={"offset": 1}, headers=c.doctor_headers)
    assert r.json()["items"] == []
    assert r.json()["total"] == 1
    # The coordinator lists the organization, never the other one.
    r = await client.get("/api/v1/patients", params={"limit": 200}, headers=c.coordinator)
    assert sorted(p["id"] for p in r.json()["items"]) == sorted([c.mine, c.theirs])
    assert r.json()["total"] == 2
    # Practitioners and users: the organization's only.
    r = await client.get("/api/v1/practitioners", headers=c.doctor_headers)
    async with db.unit_of_work() as s:
        org_users = set((await s.execute(select(User.id).where(User.org_id == c.org))).scalars())
    assert {p["user_id"] for p in r.json()} <= org_users


async def _patient_row(db: Database, patient_id: int) -> dict[str, Any]:
    async with db.unit_of_work() as s:
        row = await s.get(Patient, patient_id)
        assert row is not None
        return {k: getattr(row, k) for k in ("org_id", "user_id", "mrn", "birth_date", "given_name")}


async def test_owner_and_identity_fields_cannot_be_mass_assigned(
    client: httpx.AsyncClient, db: Database
) -> None:
    c = await _clinic(db)
    other_org = await make_org(db)
    admin = await make_user(db, c.org, Role.ADMIN)
    admin_headers = bearer(await token_for(db, admin))
    base = {
        "mrn": "MA-1",
        "given_name": "A",
        "family_name": "B",
        "birth_date": "1970-01-01",
        "sex": "male",
        "state": "VT",
    }

    async def refused(
        method: str, url: str, body: dict[str, Any], headers: dict[str, str], fields: set[str]
    ) -> None:
        r = await client.request(method, url, json=body, headers=headers)
        assert r.status_code == 422, (url, r.text)
        assert {e["field"] for e in r.json()["errors"]} == fields

    await refused(
        "POST",
        "/api/v1/patients",
        base | {"org_id": other_org, "id": 1, "user_id": admin.user_id, "created_at": "2020-01-01T00:00:00Z"},
        c.coordinator,
        {"org_id", "id", "user_id", "created_at"},
    )
    async with db.unit_of_work() as s:
        assert (await s.execute(select(Patient.id).where(Patient.mrn == "MA-1"))).first() is None

    before = await _patient_row(db, c.mine)
    await refused(
        "PATCH",
        f"/api/v1/patients/{c.mine}",
        {
            "org_id": other_org,
            "user_id": admin.user_id,
            "mrn": "X-1",
            "birth_date": "2000-01-01",
            "given_name": "Z",
        },
        c.coordinator,
        {"org_id", "user_id", "mrn", "birth_date"},
    )
    assert await _patient_row(db, c.mine) == before

    await refused(
        "PATCH",
        f"/api/v1/users/{c.doctor.user_id}",
        {"role": "admin", "org_id": other_org},
        admin_headers,
        {"role", "org_id"},
    )
    await refused(
        "POST",
        "/api/v1/users",
        {
            "email": "new@clinic-example.org",
            "display_name": "N",
            "role": "nurse",
            "password": "long enough pass",
            "org_id": other_org,
        },
        admin_headers,
        {"org_id"},
    )
    await refused(
        "POST",
        "/api/v1/tokens",
        {
            "user_id": c.doctor.user_id,
            "name": "t",
            "scopes": ["user/*.r"],
            "org_id": other_org,
            "token_hash": "0",
        },
        admin_headers,
        {"org_id", "token_hash"},
    )
    await refused(
        "POST",
        f"/api/v1/patients/{c.mine}/care-team",
        {"practitioner_id": c.spare.practitioner_id, "patient_id": c.theirs, "org_id": other_org},
        c.coordinator,
        {"patient_id", "org_id"},
    )
    await refused(
        "POST",
        f"/api/v1/patients/{c.theirs}/break-glass",
        {
            "reason": "unconscious, no history",
            "password": c.doctor.password,
            "user_id": 1,
            "expires_at": "2100-01-01T00:00:00Z",
        },
        c.doctor_headers,
        {"user_id", "expires_at"},
    )
    async with db.unit_of_work() as s:
        doctor = await s.get(User, c.doctor.user_id)
        assert doctor is not None
        assert doctor.role == "physician"
        assert doctor.org_id == c.org
        assert (
            await s.execute(select(User.id).where(User.email == "new@clinic-example.org"))
        ).first() is None


async def test_deny_overrides_allow(client: httpx.AsyncClient, db: Database) -> None:
    c = await _clinic(db)
    url = f"/api/v1/patients/{c.mine}"
    # Role policy denies, the token's scopes allow everything: denied.
    admin = await make_user(db, c.org, Role.ADMIN)
    r = await client.get(url, headers=bearer(await token_for(db, admin, ["user/*.cruds"])))
    assert r.status_code == 403
    assert "Minefamily" not in r.text
    # Care relationship allows, the scope does not: denied.
    r = await client.get(url, headers=bearer(await token_for(db, c.doctor, ["user/Practitioner.rs"])))
    assert r.status_code == 403
    # Care relationship and scope allow, but the account is disabled (or the token revoked): denied.
    assert (await client.get(url, headers=c.doctor_headers)).status_code == 200
    admin_headers = bearer(await token_for(db, admin))
    tokens = (await client.get("/api/v1/tokens", headers=admin_headers)).json()
    doctor_token = next(t["id"] for t in tokens if t["user_id"] == c.doctor.user_id)
    assert (await client.delete(f"/api/v1/tokens/{doctor_token}", headers=admin_headers)).status_code == 204
    r = await client.get(url, headers=c.doctor_headers)
    assert r.status_code == 401
    assert "Minefamily" not in r.text
    fresh = bearer(await token_for(db, c.doctor))
    assert (await client.get(url, headers=fresh)).status_code == 200
    r = await client.patch(
        f"/api/v1/users/{c.doctor.user_id}", json={"is_active": False}, headers=admin_headers
    )
    assert r.status_code == 200
    r = await client.get(url, headers=fresh)
    assert r.status_code == 401
    # A live break-the-glass grant does not survive the account being disabled either.
    nurse = await make_user(db, c.org, Role.NURSE)
    nurse_headers = bearer(await token_for(db, nurse))
    r = await client.post(
        f"/api/v1/patients/{c.theirs}/break-glass",
        json={"reason": "collapsed in clinic", "password": nurse.password},
        headers=nurse_headers,
    )
    assert r.status_code == 201
    assert (await client.get(f"/api/v1/patients/{c.theirs}", headers=nurse_headers)).status_code == 200
    r = await client.patch(f"/api/v1/users/{nurse.user_id}", json={"is_active": False}, headers=admin_headers)
    assert r.status_code == 200
    assert (await client.get(f"/api/v1/patients/{c.theirs}", headers=nurse_headers)).status_code == 401


async def test_admin_cannot_mint_a_clinician_token_to_read_clinical_data(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An admin sees the secret of any token they issue, so the API refuses tokens for users whose role
    reaches data the admin's cannot (clinicians, coordinators, patients); informatics and admins are fine."""
    c = await _clinic(db)
    admin = await make_user(db, c.org, Role.ADMIN)
    admin_headers = bearer(await token_for(db, admin))
    patient = await make_patient(db, c.org, with_login=True)
    assert isinstance(patient, Account)
    coordinator = await make_user(db, c.org, Role.COORDINATOR)
    for target in (c.doctor, c.spare, coordinator, patient):
        r = await client.post(
            "/api/v1/tokens",
            json={"user_id": target.user_id, "name": "borrowed", "scopes": ["user/*.cruds"]},
            headers=admin_headers,
        )
        assert r.status_code == 403, r.text
        assert "token" not in r.json()
    async with db.unit_of_work() as s:
        from telecare.identity.models import ApiToken

        assert (await s.execute(select(ApiToken.id).where(ApiToken.name == "borrowed"))).first() is None
    for role in (Role.INFORMATICS, Role.ADMIN):
        other = await make_user(db, c.org, role)
        r = await client.post(
            "/api/v1/tokens",
            json={"user_id": other.user_id, "name": "service", "scopes": ["user/*.rs"]},
            headers=admin_headers,
        )
        assert r.status_code == 201, r.text
        assert r.json()["token"].startswith("tc_")
