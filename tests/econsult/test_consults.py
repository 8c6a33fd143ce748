"""E-consults through the REST API, on both databases: a primary-care physician asks cardiology; a
cardiologist of the queue accepts, asks a clarifying question, gets the answer on the consult and answers;
the answer is back with the requester and in the chart; turnaround is measured; codes are proposed for both
sides; specialists outside the queue and clinicians without a relationship see nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from telecare.core.db import Database
from telecare.econsult.models import ConsultQueue, ConsultQueueMember
from telecare.identity.models import Role
from telecare.notifications.models import Notification
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
from tests.files.images import minimal_pdf

API = "/api/v1/econsult"


@dataclass
class Setting:
    org: int
    queue: int
    patient: int
    pcp: Account
    cardiologist: Account
    other_cardiologist: Account  # a cardiologist who is not in the queue
    outsider: Account
    h: dict[str, dict[str, str]]


@pytest.fixture
async def setting(db: Database) -> Setting:
    org = await make_org(db)
    pcp = await make_user(db, org, Role.PHYSICIAN)
    cardiologist = await make_user(db, org, Role.PHYSICIAN)
    other = await make_user(db, org, Role.PHYSICIAN)
    outsider = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org)
    assert isinstance(patient, int)
    assert pcp.practitioner_id is not None
    await add_to_care_team(db, patient_id=patient, practitioner_id=pcp.practitioner_id, org_id=org)
    async with setup_uow(db) as s:
        queue = ConsultQueue(org_id=org, specialty="cardiology", name="Cardiology")
        s.add(queue)
        await s.flush()
        s.add(ConsultQueueMember(org_id=org, queue_id=queue.id, user_id=cardiologist.user_id))
        queue_id = queue.id
    accounts = {"pcp": pcp, "cardiologist": cardiologist, "other": other, "outsider": outsider}
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return Setting(org, queue_id, patient, pcp, cardiologist, other, outsider, h)


async def request(client: httpx.AsyncClient, s: Setting, **overrides: Any) -> httpx.Response:
    data = {
        "patient_id": str(s.patient),
        "queue_id": str(s.queue),
        "question": "Does this ECG need a workup before surgery? Marker9Q",
        "summary": "68-year-old, hip replacement planned, new LBBB.",
        "verbal_consent": "true",
        "urgency": "routine",
    }
    data.update(overrides)
    return await client.post(
        f"{API}/consults",
        data=data,
        files=[("files", ("ecg.pdf", minimal_pdf(), "application/pdf"))],
        headers=s.h["pcp"],
    )


async def test_an_econsult_goes_from_request_to_answer_and_back_to_the_requester(
    client: httpx.AsyncClient, db: Database, setting: Setting
) -> None:
    s = setting
    r = await request(client, s)
    assert r.status_code == 201, r.text
    consult = r.json()
    assert consult["status"] == "requested"
    assert consult["consent_at"] is not None
    cid = consult["id"]
    queue = (await client.get(f"{API}/consults", headers=s.h["cardiologist"])).json()
    assert [c["id"] for c in queue] == [cid]
    # Outside the queue or without a relationship: nothing, by id or in lists.
    for who in ("other", "outsider"):
        got = await client.get(f"{API}/consults/{cid}", headers=s.h[who])
        assert got.status_code == 404, who
        assert "Marker9Q" not in got.text
        assert (await client.get(f"{API}/consults", headers=s.h[who])).json() == []
        refused = await client.post(f"{API}/consults/{cid}/accept", headers=s.h[who])
        assert refused.status_code == 404
    seen = (await client.get(f"{API}/consults/{cid}", headers=s.h["cardiologist"])).json()
    [attachment] = seen["attachments"]
    pdf = await client.get(attachment["url"], headers=s.h["cardiologist"])
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF-")

    accepted = await client.post(f"{API}/consults/{cid}/accept", headers=s.h["cardiologist"])
    assert accepted.json()["status"] == "in-progress"
    assert accepted.json()["specialist_user_id"] == s.cardiologist.user_id
    q = await client.post(
        f"{API}/consults/{cid}/notes", json={"body": "Any prior echo?"}, headers=s.h["cardiologist"]
    )
    assert q.status_code == 201
    assert (await client.get(f"{API}/consults/{cid}", headers=s.h["pcp"])).json()["status"] == "on-hold"
    await client.post(f"{API}/consults/{cid}/notes", json={"body": "Echo 2024: EF 60 %."}, headers=s.h["pcp"])
    assert (await client.get(f"{API}/consults/{cid}", headers=s.h["pcp"])).json()["status"] == "in-progress"
    # The requester cannot answer their own consult; the specialist can.
    own = await client.post(
        f"{API}/consults/{cid}/answer",
        json={"outcome": "advice", "assessment": "x", "recommendations": "y"},
        headers=s.h["pcp"],
    )
    assert own.status_code == 403
    answered = await client.post(
        f"{API}/consults/{cid}/answer",
        json={
            "outcome": "advice",
            "assessment": "Isolated LBBB with normal EF: low risk.",
            "recommendations": "No further workup before surgery.",
        },
        headers=s.h["cardiologist"],
    )
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert body["status"] == "completed"
    assert body["answered_by_user_id"] == s.cardiologist.user_id
    mine = (await client.get(f"{API}/consults", params={"view": "mine"}, headers=s.h["pcp"])).json()
    [row] = mine
    assert row["status"] == "completed"
    assert row["turnaround_hours"] is not None
    async with db.unit_of_work(read_only=True) as session:
        notes = (
            (
                await session.execute(
                    select(Notification).where(Notification.recipient_user_id == s.pcp.user_id)
                )
            )
            .scalars()
            .all()
        )
    subjects = [n.subject for n in notes]
    assert "Your e-consult has been answered" in subjects
    assert all("LBBB" not in n.body for n in notes)  # notifications carry no clinical content
    chart = await client.get(f"{API}/consults", params={"patient_id": s.patient}, headers=s.h["pcp"])
    assert [c["id"] for c in chart.json()] == [cid]
    export = await client.get(f"/api/v1/patients/{s.patient}/$export", headers=s.h["pcp"])
    assert export.status_code == 200, export.text
    assert (
        "No further workup before surgery." in export.json()["econsults"]["econsults"][0]["recommendations"]
    )


async def test_consent_and_a_focused_question_are_required(
    client: httpx.AsyncClient, setting: Setting
) -> None:
    r = await request(client, setting, verbal_consent="false", question=" ")
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["errors"]} == {"verbal_consent", "question"}
    listed = await client.get(f"{API}/consults", headers=setting.h["cardiologist"])
    assert listed.json() == []


async def test_a_retried_request_with_the_same_key_creates_one_consult(
    client: httpx.AsyncClient, setting: Setting
) -> None:
    h = {**setting.h["pcp"], "Idempotency-Key": "ec-1"}
    data = {
        "patient_id": str(setting.patient),
        "queue_id": str(setting.queue),
        "question": "q",
        "summary": "s",
        "verbal_consent": "true",
    }
    first = await client.post(f"{API}/consults", data=data, headers=h)
    again = await client.post(f"{API}/consults", data=data, headers=h)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert len((await client.get(f"{API}/consults", headers=setting.h["cardiologist"])).json()) == 1


async def test_codes_are_proposed_for_both_sides_from_the_logged_time(
    client: httpx.AsyncClient, setting: Setting
) -> None:
    s = setting
    cid = (await request(client, s)).json()["id"]
    await client.post(f"{API}/consults/{cid}/accept", headers=s.h["cardiologist"])
    await client.post(f"{API}/consults/{cid}/time", json={"minutes": 7}, headers=s.h["cardiologist"])
    await client.post(f"{API}/consults/{cid}/time", json={"minutes": 16}, headers=s.h["pcp"])
    open_ = (await client.get(f"{API}/consults/{cid}/billing", headers=s.h["cardiologist"])).json()
    assert open_["consultant"]["code"] is None  # not answered yet
    await client.post(
        f"{API}/consults/{cid}/answer",
        json={"outcome": "advice", "assessment": "a", "recommendations": "r"},
        headers=s.h["cardiologist"],
    )
    billing = (await client.get(f"{API}/consults/{cid}/billing", headers=s.h["cardiologist"])).json()
    assert billing["consultant"]["code"] == "99451", billing  # written report only, 7 minutes
    assert billing["consultant"]["minutes"] == 7
    assert billing["requester"]["code"] == "99452", billing  # 16 minutes of the requester's time


async def test_a_specialist_can_decline_and_the_requester_can_withdraw(
    client: httpx.AsyncClient, setting: Setting
) -> None:
    s = setting
    first = (await request(client, s)).json()["id"]
    declined = await client.post(
        f"{API}/consults/{first}/decline",
        json={"reason": "Needs an in-person visit"},
        headers=s.h["cardiologist"],
    )
    assert declined.json()["status"] == "rejected"
    second = (await request(client, s)).json()["id"]
    not_mine = await client.post(
        f"{API}/consults/{second}/cancel", json={"reason": "x"}, headers=s.h["cardiologist"]
    )
    assert not_mine.status_code == 403
    withdrawn = await client.post(
        f"{API}/consults/{second}/cancel", json={"reason": "Resolved"}, headers=s.h["pcp"]
    )
    assert withdrawn.json()["status"] == "cancelled"
    again = await client.post(f"{API}/consults/{second}/accept", headers=s.h["cardiologist"])
    assert again.status_code == 409


async def test_the_pages_take_a_request_from_the_chart_to_the_answer(
    app: Any, db: Database, setting: Setting
) -> None:
    from tests.factories import web_login

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as pcp,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as cardio,
    ):
        csrf = await web_login(pcp, setting.pcp)
        chart = await pcp.get(f"/patients/{setting.patient}")
        assert f'href="/econsults/new?patient_id={setting.patient}"' in chart.text
        form = await pcp.get(f"/econsults/new?patient_id={setting.patient}")
        assert "verbally" in form.text
        refused = await pcp.post(
            "/econsults/new",
            data={
                "csrf_token": csrf,
                "patient_id": str(setting.patient),
                "queue_id": str(setting.queue),
                "question": "Anticoagulate?",
                "summary": "AF, CHA2DS2-VASc 3",
            },
        )
        assert refused.status_code == 422
        assert "Anticoagulate?" in refused.text  # kept for the second try
        assert 'id="ec-consent-err"' in refused.text
        sent = await pcp.post(
            "/econsults/new",
            data={
                "csrf_token": csrf,
                "patient_id": str(setting.patient),
                "queue_id": str(setting.queue),
                "question": "Anticoagulate?",
                "summary": "AF, CHA2DS2-VASc 3",
                "verbal_consent": "yes",
            },
        )
        assert sent.status_code == 303
        location = sent.headers["location"]
        cardio_csrf = await web_login(cardio, setting.cardiologist)
        queue = await cardio.get("/econsults")
        assert f'href="{location}"' in queue.text
        cid = location.rsplit("/", 1)[1]
        await cardio.post(f"/econsults/{cid}/accept", data={"csrf_token": cardio_csrf})
        answered = await cardio.post(
            f"/econsults/{cid}/answer",
            data={
                "csrf_token": cardio_csrf,
                "outcome": "advice",
                "assessment": "Yes, DOAC indicated.",
                "recommendations": "Apixaban 5 mg twice daily.",
            },
        )
        assert answered.status_code == 303
        page = await pcp.get(location)
        assert "Apixaban 5 mg twice daily." in page.text
        mine = await pcp.get("/econsults")
        assert "answered in" in mine.text
