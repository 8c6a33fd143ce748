"""Triage encounters through the REST API and the pages, on both databases: a nurse triages a patient in
their care with the location taken first; the disposition is acted on (an emergency red flag ends the
questions at once with the emergency instructions; a self-harm answer raises the care team's stat task; a
non-emergency outcome offers slots from scheduling and attaches the condition's articles); the SBAR note
is drafted, edited and signed once; a patient's self-triage before booking routes them and an emergency
shows no way to book; nobody outside the relationship sees it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from telecare.caretasks.models import CareTask
from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.education.models import EducationAssignment
from telecare.identity.models import Role
from telecare.triage.models import TriageEncounter
from tests.factories import Account, add_to_care_team, bearer, make_user, setup_uow, token_for
from tests.visit_factories import NOW, Clinic, add_weekly, login, make_clinic

API = "/api/v1/triage"
NO = "no"


@dataclass
class World:
    clinic: Clinic
    nurse: Account
    therapist: Account
    outsider: Account
    h: dict[str, dict[str, str]]

    @property
    def pid(self) -> int:
        assert self.clinic.patient.patient_id is not None
        return self.clinic.patient.patient_id


@pytest.fixture
async def world(db: Database) -> World:
    freeze_clock(NOW)
    clinic = await make_clinic(db)
    org = clinic.org_id
    nurse = await make_user(db, org, Role.NURSE)
    therapist = await make_user(db, org, Role.THERAPIST)
    outsider = await make_user(db, org, Role.NURSE)
    pid = clinic.patient.patient_id
    assert pid is not None
    for who in (nurse, therapist):
        assert who.practitioner_id is not None
        await add_to_care_team(db, patient_id=pid, practitioner_id=who.practitioner_id, org_id=org)
    doctor = clinic.doctor.practitioner_id
    assert doctor is not None
    for weekday in range(7):
        await add_weekly(db, practitioner_id=doctor, org_id=org, weekday=weekday, start=time(9), end=time(17))
    accounts = {
        "patient": clinic.patient,
        "nurse": nurse,
        "therapist": therapist,
        "outsider": outsider,
        "coordinator": clinic.coordinator,
    }
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return World(clinic, nurse, therapist, outsider, h)


async def start(client: httpx.AsyncClient, world: World, who: str = "nurse", **body: Any) -> httpx.Response:
    payload = {
        "patient_id": world.pid,
        "protocol": "adult-fever",
        "location_state": "PA",
        "location_detail": "Home, 12 Elm St, Harrisburg",
        "callback_phone": "+1 717 555 0100",
        **body,
    }
    return await client.post(f"{API}/encounters", json=payload, headers=world.h[who])


async def answer(
    client: httpx.AsyncClient, world: World, eid: int, who: str = "nurse", **answers: str
) -> httpx.Response:
    return await client.post(
        f"{API}/encounters/{eid}/answers", json={"answers": answers}, headers=world.h[who]
    )


async def test_location_comes_first(client: httpx.AsyncClient, world: World) -> None:
    r = await start(client, world, location_state="", location_detail="")
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"location_state", "location_detail"}
    r = await start(client, world, location_state="ZZ")
    assert [e["field"] for e in r.json()["errors"]] == ["location_state"]
    r = await start(client, world, protocol="nope")
    assert [e["field"] for e in r.json()["errors"]] == ["protocol"]
    # A patient's self-triage needs the state only.
    r = await start(client, world, "patient", location_detail="")
    assert r.status_code == 201, r.text
    assert r.json()["mode"] == "self"


async def test_nurse_triage_to_a_same_day_visit_with_sbar_and_reading(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    r = await start(client, world)
    assert r.status_code == 201, r.text
    eid = r.json()["id"]
    assert r.json()["location"]["state"] == "PA"
    r = await answer(client, world, eid, confused=NO, neck=NO, breathing=NO)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "in-progress"
    assert r.json()["missing"] == ["infant", "duration", "symptoms"]
    r = await answer(client, world, eid, infant=NO, duration="yes", symptoms="yes")
    body = r.json()
    assert body["status"] == "completed"
    assert body["disposition"] == "in_person_today"  # the more urgent of in-person today and telehealth
    assert body["emergency"] is False
    assert body["articles"] == ["fever-in-adults"]
    assert "Patient is in Pennsylvania (Home, 12 Elm St, Harrisburg)" in body["sbar"]["situation"]
    assert body["sbar"]["recommendation"] == "See in person today."
    assert "No red flags." in body["sbar"]["assessment"]
    # The fever article was given to the patient, marked as coming from triage.
    async with setup_uow(db) as s:
        given = (await s.execute(select(EducationAssignment))).scalars().all()
    assert [(g.article_slug, g.source_kind, g.source_id) for g in given] == [
        ("fever-in-adults", "triage", str(eid))
    ]
    # A completed triage takes no more answers; the note is edited and signed once.
    assert (await answer(client, world, eid, symptoms=NO)).status_code == 409
    r = await client.post(f"{API}/encounters/{eid}/sbar", json={"assessment": ""}, headers=world.h["nurse"])
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["sbar.assessment"]
    r = await client.post(
        f"{API}/encounters/{eid}/sbar",
        json={"recommendation": "See in person today at the Harrisburg clinic; call back if worse."},
        headers=world.h["nurse"],
    )
    assert r.status_code == 200, r.text
    assert r.json()["signed_at"] is not None
    assert r.json()["sbar"]["recommendation"].startswith("See in person today at the Harrisburg")
    again = await client.post(f"{API}/encounters/{eid}/sbar", json={}, headers=world.h["nurse"])
    assert again.status_code == 409
    # The therapist on the care team reads the outcome but neither triages nor signs.
    assert (await client.get(f"{API}/encounters/{eid}", headers=world.h["therapist"])).json()["signed_at"]
    assert (await start(client, world, "therapist")).status_code == 403
    # The export carries it.
    export = (await client.get(f"/api/v1/patients/{world.pid}/$export", headers=world.h["nurse"])).json()
    assert [e["id"] for e in export["triage"]["encounters"]] == [eid]


async def test_a_red_flag_ends_the_questions_with_emergency_instructions(
    db: Database, client: httpx.AsyncClient, world: World
) -> None:
    eid = (await start(client, world, protocol="chest-pain")).json()["id"]
    protocol = (await client.get(f"{API}/protocols/chest-pain", headers=world.h["nurse"])).json()
    first = protocol["questions"][0]["id"]
    flags = (await client.get(f"{API}/protocols", headers=world.h["nurse"])).json()
    assert all(p["label"] == "Needs clinical review before use" for p in flags)
    r = await answer(client, world, eid, **{first: "yes"})
    body = r.json()
    assert body["status"] == "completed"
    assert body["emergency"] is True
    assert body["disposition"] in {"call_911", "ed_now"}
    assert body["missing"] == []
    assert body["articles"] == []
    async with setup_uow(db) as s:
        assert (await s.execute(select(EducationAssignment))).first() is None
    csrf = await login(client, world.nurse)
    page = await client.get(f"/triage/{eid}")
    assert 'id="emergency-instructions" role="alert"' in page.text
    assert "Home, 12 Elm St, Harrisburg" in page.text
    assert "Save answers" not in page.text
    assert "Sign the note" in page.text
    chart = await client.get(f"/patients/{world.pid}")
    assert '<strong class="badge urgent">' in chart.text
    assert csrf


async def test_self_harm_raises_the_stat_task_and_shows_988(
    db: Database, app: Any, client: httpx.AsyncClient, world: World
) -> None:
    # The patient's care-team physician gets the task (without one it would go to every physician and
    # nurse of the organization: docs/caretasks.md).
    doctor = world.clinic.doctor.practitioner_id
    assert doctor is not None
    await add_to_care_team(db, patient_id=world.pid, practitioner_id=doctor, org_id=world.clinic.org_id)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as portal:
        csrf = await login(portal, world.clinic.patient)
        page = await portal.get("/triage")
        assert "Check symptoms" in page.text
        assert 'option value="PA" selected' in page.text
        r = await portal.post(
            "/triage/start", data={"csrf_token": csrf, "protocol": "self-harm", "location_state": "PA"}
        )
        assert r.status_code == 303
        url = r.headers["location"]
        r = await portal.post(url, data={"csrf_token": csrf, "thoughts": "yes"})
        assert r.status_code == 303
        page = await portal.get(url)
        assert "Call or text 988 now" in page.text
        assert "Your care team has been told" in page.text
        assert "/visits/book" not in page.text
    eid = int(url.rsplit("/", 1)[1])
    async with setup_uow(db) as s:
        tasks = (await s.execute(select(CareTask))).scalars().all()
        row = await s.get(TriageEncounter, eid)
    assert [(t.kind, t.priority, t.source_id, t.assignee_user_id) for t in tasks] == [
        ("triage-self-harm", "stat", str(eid), world.clinic.doctor.user_id)
    ]
    assert row is not None
    assert row.disposition == "crisis_line"
    # The nurse on the care team sees the task; the outsider sees neither task nor triage.
    assert [t["kind"] for t in (await client.get("/api/v1/tasks", headers=world.h["nurse"])).json()] == [
        "triage-self-harm"
    ]
    assert (await client.get(f"{API}/encounters/{eid}", headers=world.h["outsider"])).status_code == 404
    assert (await client.get("/api/v1/tasks", headers=world.h["outsider"])).json() == []


async def test_self_triage_routes_to_a_video_visit_with_times_offered(
    app: Any, client: httpx.AsyncClient, world: World
) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50003))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as portal:
        csrf = await login(portal, world.clinic.patient)
        book = await portal.get("/visits/book")
        assert 'href="/triage">Check your symptoms first' in book.text
        r = await portal.post(
            "/triage/start", data={"csrf_token": csrf, "protocol": "adult-fever", "location_state": "PA"}
        )
        url = r.headers["location"]
        answers = {
            "confused": NO,
            "neck": NO,
            "breathing": NO,
            "infant": NO,
            "duration": NO,
            "symptoms": "yes",
        }
        await portal.post(url, data={"csrf_token": csrf, **answers})
        page = await portal.get(url)
        assert '<h2 id="out-h">Telehealth visit</h2>' in page.text
        assert 'id="offered-slots"' in page.text
        link = re.search(r'href="(/visits/book\?visit_type_id=\d+&amp;state=PA&amp;day=[0-9-]+)"', page.text)
        assert link is not None
        booking = await portal.get(link.group(1).replace("&amp;", "&"))
        assert booking.status_code == 200
        # The booking page opens on the free times for the state the patient said they are in.
        assert '<h2 id="slots-h">Free times (PA)</h2>' in booking.text
        assert '<ul class="slots">' in booking.text


async def test_refusals(client: httpx.AsyncClient, world: World) -> None:
    eid = (await start(client, world)).json()["id"]
    assert (await start(client, world, "outsider")).status_code == 404
    assert (await start(client, world, "coordinator")).status_code == 403
    assert (await client.get(f"{API}/encounters/{eid}", headers=world.h["coordinator"])).status_code == 403
    r = await answer(client, world, eid, confused="maybe", nonsense="yes")
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"answers.confused", "answers.nonsense"}
    r = await client.get(f"{API}/encounters/{eid}", headers=world.h["nurse"])
    assert r.json()["answers"] == {}
    assert (await answer(client, world, eid, "outsider", confused=NO)).status_code == 404
    listing = await client.get(
        f"{API}/encounters", params={"patient_id": world.pid}, headers=world.h["outsider"]
    )
    assert listing.json() == []
    assert (await client.get(f"{API}/protocols")).status_code == 401
