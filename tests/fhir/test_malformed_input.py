"""Malformed input on the FHIR surface and the RPM billing worklist: shapes that pass a route's pattern but
name no real value (month 13, another script's digits, an id beyond the INTEGER range) answer 4xx naming
the field (an OperationOutcome under /fhir/, problem+json under /api/), on both databases. Each of these
raised ValueError or reached the driver (a 500) before."""

from __future__ import annotations

from typing import Any

import httpx

from telecare.core.db import Database
from telecare.identity.models import Role
from tests.factories import add_to_care_team, bearer, make_org, make_patient, make_user, token_for

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
TOO_BIG = "99999999999"  # beyond PostgreSQL INTEGER (core/params.py)


def _spo2(effective: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "59408-5"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
    }


def _expressions(r: httpx.Response) -> list[str]:
    assert r.headers["content-type"].startswith("application/fhir+json"), r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return [e for issue in body["issue"] for e in issue.get("expression", [])]


async def test_malformed_fhir_and_billing_input_is_refused_naming_the_field(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org)
    assert isinstance(patient, int)
    assert nurse.practitioner_id is not None
    await add_to_care_team(db, patient_id=patient, practitioner_id=nurse.practitioner_id, org_id=org)
    auth = bearer(await token_for(db, nurse))

    for params, field in [
        ({"date": "ge2026-13-01"}, "date[0]"),
        ({"date": "lt2026-01-01T25:00:00Z"}, "date[0]"),
        ({"date": "２０２６-01-01"}, "date[0]"),  # full-width digits
        ({"patient": f"Patient/{TOO_BIG}"}, "patient"),
        ({"patient": "٣"}, "patient"),  # Arabic-Indic digit three: str.isdigit() but not an id
    ]:
        r = await client.get("/fhir/R4/Observation", params=params, headers=auth)
        assert r.status_code == 422, (params, r.text)
        assert _expressions(r) == [field], params

    r = await client.get(f"/fhir/R4/Observation/{TOO_BIG}", headers=auth)
    assert r.status_code == 422
    assert _expressions(r) == ["reading_id"]

    r = await client.post(
        "/fhir/R4/Observation", json=_spo2("2026-13-01T10:00:00Z", f"Patient/{patient}"), headers=auth
    )
    assert r.status_code == 422
    assert _expressions(r) == ["effectiveDateTime"]
    r = await client.post(
        "/fhir/R4/Observation", json=_spo2("2026-01-01T10:00:00Z", f"Patient/{TOO_BIG}"), headers=auth
    )
    assert r.status_code == 422
    assert _expressions(r) == ["subject.reference"]

    # Nothing was stored by the refused requests.
    r = await client.get("/fhir/R4/Observation", params={"patient": f"Patient/{patient}"}, headers=auth)
    assert r.status_code == 200
    assert r.json()["total"] == 0

    coordinator = await make_user(db, org, Role.COORDINATOR)
    for month in ("0000-01", "2026-13"):
        r = await client.get(
            "/api/v1/monitoring/billing",
            params={"month": month},
            headers=bearer(await token_for(db, coordinator)),
        )
        assert r.status_code == 422, (month, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in r.json()["errors"]] == ["month"]
