from __future__ import annotations

from telecare.core.db import Database
from telecare.identity.models import Role
from tests.factories import add_to_care_team, bearer, make_org, make_patient, make_user, token_for, web_login


async def test_clinician_reads_care_team_patient_and_not_others(client, db: Database) -> None:
    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    mine = await make_patient(db, org)
    other = await make_patient(db, org)
    assert isinstance(mine, int)
    assert isinstance(other, int)
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=mine, practitioner_id=doc.practitioner_id, org_id=org)
    token = await token_for(db, doc)
    r = await client.get(f"/api/v1/patients/{mine}", headers=bearer(token))
    assert r.status_code == 200
    assert r.json()["id"] == mine
    r = await client.get(f"/api/v1/patients/{other}", headers=bearer(token))
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.get("/api/v1/patients", headers=bearer(token))
    assert [p["id"] for p in r.json()["items"]] == [mine]


async def test_staff_web_login_with_totp(client, db: Database) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    await web_login(client, nurse)
    r = await client.get("/home")
    assert "Your patients" in r.text
