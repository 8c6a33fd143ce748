"""The FHIR door and read side: Observation create, transaction/batch Bundles, CapabilityStatement, Patient
and Observation read/search with paging. Every resource returned validates against fhir.resources (R4B)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient

from telecare.core.db import Database
from tests.factories import bearer, token_for
from tests.monitoring.conftest import Clinic, at

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def bp_obs(
    serial: str, sys_: float, dia: float, minutes_ago: float, rid: str | None = None
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "effectiveDateTime": at(minutes_ago),
        "device": {"identifier": {"value": serial}},
        "component": [
            {
                "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                "valueQuantity": {"value": sys_, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            },
            {
                "code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                "valueQuantity": {"value": dia, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
            },
        ],
    }
    if rid:
        obs["identifier"] = [{"value": rid}]
    return obs


def spo2_obs(serial: str, value: float, minutes_ago: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "59408-5"}, {"system": LOINC, "code": "2708-6"}]},
        "effectiveDateTime": at(minutes_ago),
        "device": {"identifier": {"value": serial}},
        "valueQuantity": {"value": value, "unit": "%", "system": UCUM, "code": "%"},
    }


def bundle(kind: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": r, "request": {"method": "POST", "url": "Observation"}} for r in resources],
    }


async def test_capability_statement_is_valid(client: httpx.AsyncClient) -> None:
    r = await client.get("/fhir/R4/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    cap = CapabilityStatement.model_validate(r.json())
    types = {res.type for res in cap.rest[0].resource}
    assert types == {"Patient", "Observation"}


async def test_post_observation_then_read_and_replay(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    r = await client.post(
        "/fhir/R4/Observation",
        json=bp_obs(clinic.serials["bp_cuff"], 132, 84, 5, "x1"),
        headers=bearer(clinic.key),
    )
    assert r.status_code == 201, r.text
    created = Observation.model_validate(r.json())
    assert created.subject.reference == f"Patient/{clinic.patient}"
    assert [c.valueQuantity.value for c in created.component] == [132, 84]
    assert r.headers["location"].endswith(f"/Observation/{created.id}")
    again = await client.post(
        "/fhir/R4/Observation",
        json=bp_obs(clinic.serials["bp_cuff"], 132, 84, 5, "x1"),
        headers=bearer(clinic.key),
    )
    assert again.status_code == 200
    assert again.json()["id"] == created.id
    nurse = await token_for(db, clinic.nurse)
    read = await client.get(f"/fhir/R4/Observation/{created.id}", headers=bearer(nurse))
    assert read.status_code == 200
    Observation.model_validate(read.json())
    outsider = await token_for(db, clinic.outsider)
    denied = await client.get(f"/fhir/R4/Observation/{created.id}", headers=bearer(outsider))
    assert denied.status_code == 404
    OperationOutcome.model_validate(denied.json())


async def test_pulse_oximetry_carries_both_codes(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    r = await client.post(
        "/fhir/R4/Observation",
        json=spo2_obs(clinic.serials["pulse_oximeter"], 95, 3),
        headers=bearer(clinic.key),
    )
    assert r.status_code == 201, r.text
    codes = [c["code"] for c in r.json()["code"]["coding"]]
    assert set(codes) == {"59408-5", "2708-6"}
    Observation.model_validate(r.json())


async def test_invalid_observation_is_an_operation_outcome(client: httpx.AsyncClient, clinic: Clinic) -> None:
    bad = spo2_obs(clinic.serials["pulse_oximeter"], 130, 3)
    bad["status"] = "bogus"
    r = await client.post("/fhir/R4/Observation", json=bad, headers=bearer(clinic.key))
    assert r.status_code == 422
    outcome = OperationOutcome.model_validate(r.json())
    fields = {i.expression[0] for i in outcome.issue}
    assert {"status", "valueQuantity.value"} <= fields


async def test_transaction_is_all_or_nothing_and_batch_is_per_entry(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    serial = clinic.serials["bp_cuff"]
    good = [bp_obs(serial, 120 + i, 80, 30 - i) for i in range(3)]
    bad = bp_obs(serial, 900, 80, 10)
    r = await client.post("/fhir/R4", json=bundle("transaction", [*good, bad]), headers=bearer(clinic.key))
    assert r.status_code == 422
    assert "entry[3].resource.component[8480-6]" in r.text
    nurse = await token_for(db, clinic.nurse)
    search = await client.get(f"/fhir/R4/Observation?patient={clinic.patient}", headers=bearer(nurse))
    assert search.json()["total"] == 0
    r = await client.post("/fhir/R4", json=bundle("transaction", good), headers=bearer(clinic.key))
    assert r.status_code == 200
    resp = Bundle.model_validate(r.json())
    assert resp.type == "transaction-response"
    assert [e.response.status for e in resp.entry] == ["201 Created"] * 3
    r = await client.post("/fhir/R4", json=bundle("batch", [*good, bad]), headers=bearer(clinic.key))
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses == ["200 OK", "200 OK", "200 OK", "422 Unprocessable Entity"]
    Bundle.model_validate(r.json())


async def test_search_by_patient_code_date_with_paging(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    serial = clinic.serials["bp_cuff"]
    await client.post(
        "/fhir/R4",
        json=bundle("transaction", [bp_obs(serial, 120, 80, 60 * h) for h in range(1, 8)]),
        headers=bearer(clinic.key),
    )
    await client.post(
        "/fhir/R4/Observation",
        json=spo2_obs(clinic.serials["pulse_oximeter"], 96, 30),
        headers=bearer(clinic.key),
    )
    nurse = await token_for(db, clinic.nurse)
    r = await client.get(
        "/fhir/R4/Observation",
        params={"patient": f"Patient/{clinic.patient}", "code": f"{LOINC}|85354-9", "_count": 3},
        headers=bearer(nurse),
    )
    page = Bundle.model_validate(r.json())
    assert page.total == 7
    assert len(page.entry) == 3
    times = [e.resource.effectiveDateTime for e in page.entry]
    assert times == sorted(times, reverse=True)
    nxt = next(link.url for link in page.link if link.relation == "next")
    r2 = await client.get(nxt.replace("http://127.0.0.1:8000", ""), headers=bearer(nurse))
    assert len(r2.json()["entry"]) == 3
    assert r2.json()["entry"][0]["resource"]["id"] != r.json()["entry"][0]["resource"]["id"]
    r3 = await client.get(
        "/fhir/R4/Observation",
        params=[("patient", str(clinic.patient)), ("code", "59408-5")],
        headers=bearer(nurse),
    )
    assert r3.json()["total"] == 1
    from datetime import timedelta

    from telecare.core.time import utc_now

    lo = (utc_now() - timedelta(hours=3, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    hi = (utc_now() - timedelta(hours=1, minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    r4 = await client.get(
        "/fhir/R4/Observation",
        params=[
            ("patient", str(clinic.patient)),
            ("code", "85354-9"),
            ("date", f"ge{lo}"),
            ("date", f"lt{hi}"),
        ],
        headers=bearer(nurse),
    )
    assert r4.json()["total"] == 2
    outsider = await token_for(db, clinic.outsider)
    r5 = await client.get(f"/fhir/R4/Observation?patient={clinic.patient}", headers=bearer(outsider))
    assert r5.status_code == 404  # like the REST door: outside reach, as if the patient did not exist
    assert r5.json()["resourceType"] == "OperationOutcome"


async def test_patient_read_and_identifier_search(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    nurse = await token_for(db, clinic.nurse)
    r = await client.get(f"/fhir/R4/Patient/{clinic.patient}", headers=bearer(nurse))
    patient = FhirPatient.model_validate(r.json())
    mrn = patient.identifier[0].value
    r = await client.get(
        "/fhir/R4/Patient",
        params={"identifier": f"https://telecare.dev/sid/mrn|{mrn}"},
        headers=bearer(nurse),
    )
    found = Bundle.model_validate(r.json())
    assert found.total == 1
    assert found.entry[0].resource.id == str(clinic.patient)
    outsider = await token_for(db, clinic.outsider)
    r = await client.get("/fhir/R4/Patient", params={"identifier": mrn}, headers=bearer(outsider))
    assert r.json()["total"] == 0
    r = await client.get(f"/fhir/R4/Patient/{clinic.patient}", headers=bearer(outsider))
    assert r.status_code == 404
    assert r.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("missing", ["effectiveDateTime", "code"])
async def test_observation_missing_required_element(
    client: httpx.AsyncClient, clinic: Clinic, missing: str
) -> None:
    obs = bp_obs(clinic.serials["bp_cuff"], 120, 80, 1)
    del obs[missing]
    r = await client.post("/fhir/R4/Observation", json=obs, headers=bearer(clinic.key))
    assert r.status_code == 422
    assert any(i["expression"] == [missing] for i in r.json()["issue"])
