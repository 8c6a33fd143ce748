"""Server-rendered monitoring pages: worklist, patient page with charts and CGM, billing, portal
entry."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import httpx

from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Role
from tests.factories import Account, add_to_care_team, bearer, enrol_rpm, make_patient, make_user, web_login
from tests.monitoring.conftest import Clinic, bp, single


async def test_worklist_and_patient_page(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    items = [
        bp(clinic.serials["bp_cuff"], 190, 100, 30),
        single(clinic.serials["scale"], "weight", 80, "kg", 20),
    ]
    cgm_items = [single(clinic.serials["cgm"], "cgm", 100 + (i % 50), "mg/dL", 5 * i + 1) for i in range(200)]
    await client.post("/api/v1/monitoring/readings", json=items + cgm_items, headers=bearer(clinic.key))
    await web_login(client, clinic.nurse)
    page = await client.get("/monitoring")
    assert page.status_code == 200
    assert "Blood pressure in crisis range" in page.text
    assert "systolic 190 &gt; 180 mm[Hg]" in page.text
    assert 'src="/static/js/monitoring/worklist.js"' in page.text
    patient = await client.get(f"/monitoring/patients/{clinic.patient}?days=7")
    assert patient.status_code == 200
    data = json.loads(
        re.search(
            r'<script type="application/json" id="chart-data">(.*?)</script>', patient.text, re.S
        ).group(1)
    )
    assert [p[1] for p in data["series"]["systolic"]] == [190]
    assert data["bands"]["systolic"] == [90, 180]
    assert len(data["series"]["cgm"]) == 200
    assert data["agp"]
    # 200 readings over 17 hours is not 14 days at 70 % wear: metrics withheld, the reason shown
    assert "Metrics not computed: sensor wear 5 % is below the 70 %" in patient.text
    static = await client.get("/static/vendor/chartjs/chart.umd.min.js")
    assert static.status_code == 200
    assert "Chart" in static.text[:2000]


async def test_outsider_nurse_gets_no_patient_page(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    await web_login(client, clinic.outsider)
    r = await client.get(f"/monitoring/patients/{clinic.patient}")
    assert r.status_code == 404
    page = await client.get("/monitoring")
    assert "No open alerts." in page.text


async def test_log_time_and_billing_page(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    csrf = await web_login(client, clinic.nurse)
    r = await client.post(
        f"/monitoring/patients/{clinic.patient}/time",
        data={"kind": "call", "minutes": "22", "csrf_token": csrf},
    )
    assert r.status_code == 303
    page = await client.get("/monitoring/billing")
    assert "99457" in page.text
    assert "management minutes: 22" in page.text


async def test_patient_enters_a_manual_reading_in_the_portal(client: httpx.AsyncClient, db: Database) -> None:
    from tests.factories import make_org

    org = await make_org(db)
    doc = await make_user(db, org, Role.PHYSICIAN)
    me = await make_patient(db, org, with_login=True)
    assert isinstance(me, Account)
    assert me.patient_id
    assert doc.practitioner_id
    await add_to_care_team(db, patient_id=me.patient_id, practitioner_id=doc.practitioner_id, org_id=org)
    await enrol_rpm(db, org, me.patient_id, doc.practitioner_id)
    csrf = await web_login(client, me)
    local = (utc_now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    form = {
        "csrf_token": csrf,
        "kind": "weight",
        "measured_at": local,
        "tz_offset": "0",
        "value": "176",
        "unit": "[lb_av]",
    }
    r = await client.post("/my/readings", data=form)
    assert r.status_code == 303, r.text
    page = await client.get("/my/readings")
    assert "79.8 kg (entered 176 [lb_av])" in page.text
    assert "My targets" in page.text
    bad = await client.post("/my/readings", data={**form, "value": "9000"})
    assert bad.status_code == 422
    assert "implausible" in bad.text


async def test_patient_export_includes_monitoring(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    from tests.factories import token_for

    await client.post(
        "/api/v1/monitoring/readings",
        json=[single(clinic.serials["scale"], "weight", 180, "lb", 5)],
        headers=bearer(clinic.key),
    )
    token = await token_for(db, clinic.physician)
    r = await client.get(f"/api/v1/patients/{clinic.patient}/$export", headers=bearer(token))
    section = r.json()["remote_monitoring"]
    assert section["readings"][0]["original"] == {"value": 180, "value2": None, "unit": "[lb_av]"}
    assert section["enrolments"][0]["programs"] == ["hypertension", "diabetes"]
