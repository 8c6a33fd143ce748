"""Authorization matrix for appointments, visits (encounters), notes and billing lines over the REST API:
who gets 200, who 403 (role lacks the grant) and who 404 (outside reach, no existence oracle)."""

from __future__ import annotations

import httpx
import pytest

from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.identity.models import Role
from telecare.visits import notes
from tests.factories import Account, bearer, make_patient, make_user, token_for
from tests.visit_factories import WED_9AM_NY, make_clinic, make_doctor, principal_of
from tests.visits.test_notes_billing import COMPLETE, run_visit

ROLES = ["owner", "other_patient", "treating", "unrelated_clinician", "coordinator", "admin", "informatics"]

# (method, path template, expected status per role in ROLES order)
MATRIX = [
    ("GET", "/api/v1/appointments/{id}", [200, 404, 200, 404, 200, 403, 403]),
    ("GET", "/api/v1/visits/{id}/timeline", [200, 404, 200, 404, 200, 403, 403]),
    ("GET", "/api/v1/visits/{id}/join", [200, 404, 200, 404, 200, 403, 403]),
    ("GET", "/api/v1/visits/{id}/note", [200, 404, 200, 404, 403, 403, 403]),
    ("GET", "/api/v1/visits/{id}/summary", [200, 404, 200, 404, 403, 403, 403]),
    ("GET", "/api/v1/visits/{id}/billing", [403, 403, 200, 404, 200, 403, 403]),
    ("POST", "/api/v1/visits/{id}/admit", [403, 404, 409, 404, 403, 403, 403]),
]


async def test_authorization_matrix_for_appointments_visits_notes_and_billing(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    async with db.unit_of_work() as s:
        await notes.update_note(s, principal_of(clinic.doctor), appointment_id=appt.id, data=COMPLETE)
        await notes.sign_note(s, principal_of(clinic.doctor), appointment_id=appt.id)
    other = await make_patient(db, clinic.org_id, with_login=True)
    assert isinstance(other, Account)
    accounts: dict[str, Account] = {
        "owner": clinic.patient,
        "other_patient": other,
        "treating": clinic.doctor,
        "unrelated_clinician": await make_doctor(db, clinic.org_id),
        "coordinator": clinic.coordinator,
        "admin": await make_user(db, clinic.org_id, Role.ADMIN),
        "informatics": await make_user(db, clinic.org_id, Role.INFORMATICS),
    }
    freeze_clock(WED_9AM_NY)
    tokens = {name: await token_for(db, acc) for name, acc in accounts.items()}
    failures = []
    for method, template, expected in MATRIX:
        path = template.format(id=appt.id)
        for role, want in zip(ROLES, expected, strict=True):
            r = await client.request(method, path, headers=bearer(tokens[role]))
            if r.status_code != want:
                failures.append(
                    f"{method} {template} as {role}: {r.status_code} (want {want}) {r.text[:120]}"
                )
            if r.status_code >= 400:
                assert r.headers["content-type"].startswith("application/problem+json")
    assert not failures, "\n".join(failures)


async def test_the_coordinator_sees_no_clinical_content_in_the_api_responses(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    async with db.unit_of_work() as s:
        await notes.update_note(s, principal_of(clinic.doctor), appointment_id=appt.id, data=COMPLETE)
        await notes.sign_note(s, principal_of(clinic.doctor), appointment_id=appt.id)
    freeze_clock(WED_9AM_NY)
    token = await token_for(db, clinic.coordinator)
    for path in (
        f"/api/v1/appointments/{appt.id}",
        f"/api/v1/visits/{appt.id}/timeline",
        f"/api/v1/visits/{appt.id}/billing",
    ):
        r = await client.get(path, headers=bearer(token))
        assert r.status_code == 200
        for clinical in ("lisinopril", "Hypertension", "home readings"):
            assert clinical not in r.text
    r = await client.get(f"/api/v1/visits/{appt.id}/note", headers=bearer(token))
    assert r.status_code == 403
    assert "lisinopril" not in r.text


@pytest.mark.parametrize("path", ["/api/v1/appointments/999999", "/api/v1/visits/999999/note"])
async def test_unknown_and_unreachable_visits_look_the_same(
    client: httpx.AsyncClient, db: Database, path: str
) -> None:
    clinic = await make_clinic(db)
    token = await token_for(db, clinic.doctor)
    r = await client.get(path, headers=bearer(token))
    assert r.status_code == 404
    assert r.json()["code"] == "appointment_not_found"


async def test_the_patient_export_carries_visits_with_the_signed_note_and_location(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    async with db.unit_of_work() as s:
        await notes.update_note(s, principal_of(clinic.doctor), appointment_id=appt.id, data=COMPLETE)
        await notes.sign_note(s, principal_of(clinic.doctor), appointment_id=appt.id)
    freeze_clock(WED_9AM_NY)
    token = await token_for(db, clinic.patient)
    r = await client.get(f"/api/v1/patients/{clinic.patient.patient_id}/$export", headers=bearer(token))
    assert r.status_code == 200
    (visit,) = r.json()["visits"]
    assert visit["appointment_id"] == appt.id
    assert visit["note"]["plan"] == COMPLETE.plan
    assert visit["recorded"]["patient_location"]["city"] == "Erie"
    assert visit["recorded"]["consent"]["version"] == 1
