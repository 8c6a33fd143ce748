"""Secure messaging through the REST API, on both databases: sending with attachments, who can read what
(bodies checked), read receipts and unread counts, idempotent retries, emergency wording, response-time
targets on a controlled clock, notification emails without content, and the online digital E/M proposal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
from sqlalchemy import func, select

from telecare.audit.models import AuditEntry
from telecare.core.db import Database
from telecare.core.time import advance_clock, freeze_clock
from telecare.files.models import StoredFile
from telecare.messaging.models import Message, Thread
from tests.files.images import gps_exif, jpeg, minimal_pdf, picture
from tests.messaging.conftest import Practice

API = "/api/v1/messaging"


async def send(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    inbox_id: int,
    subject: str = "Rash on my arm",
    body: str = "It started on Monday and itches.",
    files: list[tuple[str, bytes, str]] | None = None,
    key: str | None = None,
    patient_id: int | None = None,
) -> httpx.Response:
    data: dict[str, Any] = {"inbox_id": str(inbox_id), "subject": subject, "body": body}
    if patient_id is not None:
        data["patient_id"] = str(patient_id)
    h = dict(headers)
    if key:
        h["Idempotency-Key"] = key
    parts = [("files", f) for f in files or []]
    return await client.post(f"{API}/threads", data=data, files=parts or None, headers=h)


async def reply(
    client: httpx.AsyncClient, headers: dict[str, str], thread_id: int, body: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        f"{API}/threads/{thread_id}/messages", data={"body": body, **extra}, headers=headers
    )


async def count(db: Database, model: Any, **where: Any) -> int:
    async with db.unit_of_work(read_only=True) as s:
        return int(await s.scalar(select(func.count()).select_from(model).filter_by(**where)) or 0)


async def test_a_patient_message_with_two_attachments_reaches_the_team_and_lands_in_the_chart(
    client: httpx.AsyncClient, db: Database, practice: Practice
) -> None:
    photo = jpeg(picture((640, 480)), exif=gps_exif())
    r = await send(
        client,
        practice.headers["patient"],
        inbox_id=practice.primary,
        files=[("arm.jpg", photo, "image/jpeg"), ("letter.pdf", minimal_pdf(), "application/pdf")],
    )
    assert r.status_code == 201, r.text
    sent = r.json()
    assert sent["created"] is True
    assert [a["content_type"] for a in sent["message"]["attachments"]] == ["image/jpeg", "application/pdf"]
    thread_id = sent["thread_id"]

    inbox = await client.get(
        f"{API}/threads", params={"filter": "unassigned"}, headers=practice.headers["nurse"]
    )
    assert inbox.status_code == 200
    [row] = [t for t in inbox.json() if t["id"] == thread_id]
    assert row["unread"] == 1
    assert row["patient_id"] == practice.patient.patient_id
    unread = (await client.get(f"{API}/unread", headers=practice.headers["nurse"])).json()
    assert unread["total"] == 1
    assert unread["by_inbox"] == {str(practice.primary): 1}

    view = (await client.get(f"{API}/threads/{thread_id}", headers=practice.headers["nurse"])).json()
    [message] = view["messages"]
    assert message["body"] == "It started on Monday and itches."
    photo_url, pdf_url = (a["url"] for a in message["attachments"])
    got = await client.get(photo_url, headers=practice.headers["nurse"])
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/jpeg"
    assert b"Exif" not in got.content[:4096]  # re-encoded without metadata
    assert (await client.get(pdf_url, headers=practice.headers["nurse"])).content.startswith(b"%PDF-")
    # Both files are the patient's documents, owned by the message.
    async with db.unit_of_work(read_only=True) as s:
        files = (await s.execute(select(StoredFile).order_by(StoredFile.created_at))).scalars().all()
        assert {(f.patient_id, f.owner_kind, f.owner_id) for f in files} == {
            (practice.patient.patient_id, "message", str(message["id"]))
        }
        reads = await s.scalar(
            select(func.count(AuditEntry.id)).where(
                AuditEntry.resource_type == "Binary",
                AuditEntry.action == "read",
                AuditEntry.outcome == "success",
            )
        )
        assert reads == 2  # each download is audited
    # Reading the thread cleared the team's unread count (written after the read, before the answer).
    assert (await client.get(f"{API}/unread", headers=practice.headers["nurse"])).json()["total"] == 0


async def test_nobody_outside_the_patient_and_the_team_can_read_a_thread_or_its_attachment(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    secret = "Private detail 7Qz"
    r = await send(
        client,
        practice.headers["patient"],
        inbox_id=practice.primary,
        body=secret,
        files=[("a.png", jpeg(picture()), "image/jpeg")],
    )
    thread_id = r.json()["thread_id"]
    file_url = r.json()["message"]["attachments"][0]["url"]
    for who in ("other_patient", "outsider"):
        got = await client.get(f"{API}/threads/{thread_id}", headers=practice.headers[who])
        assert got.status_code == 404, (who, got.text)
        assert secret not in got.text
        download = await client.get(file_url, headers=practice.headers[who])
        assert download.status_code == 404
        assert b"\xff\xd8" not in download.content
        listed = await client.get(
            f"{API}/threads",
            params={"patient_id": practice.patient.patient_id},
            headers=practice.headers[who],
        )
        # A search naming a patient out of reach answers an empty list (no search oracle), not the thread.
        assert listed.status_code == 200
        assert listed.json() == []
        answer = await reply(client, practice.headers[who], thread_id, "let me in")
        assert answer.status_code == 404
    # On the care team but not in the inbox: reads it from the chart, cannot answer for the team.
    chart_read = await client.get(f"{API}/threads/{thread_id}", headers=practice.headers["care_team_only"])
    assert chart_read.status_code == 200
    assert secret in chart_read.text
    refused = await reply(client, practice.headers["care_team_only"], thread_id, "I am not on this team")
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_an_inbox_member"
    # A patient cannot write about somebody else.
    other = await send(
        client,
        practice.headers["other_patient"],
        inbox_id=practice.primary,
        patient_id=practice.patient.patient_id,
    )
    assert other.status_code == 404


async def test_read_receipts_and_unread_counts_follow_reading_replying_and_closing(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    patient, nurse = practice.headers["patient"], practice.headers["nurse"]
    thread_id = (await send(client, patient, inbox_id=practice.primary)).json()["thread_id"]
    assert (await client.get(f"{API}/unread", headers=patient)).json()["total"] == 0
    r = await reply(client, nurse, thread_id, "Please send a photo in daylight.")
    assert r.status_code == 201
    # Replying marked the patient's message read; the patient sees the receipt.
    view = (await client.get(f"{API}/threads/{thread_id}", headers=patient)).json()
    first, _answer = view["messages"]
    assert first["read_at"] is not None
    assert (await client.get(f"{API}/unread", headers=patient)).json()["total"] == 0  # reading cleared it
    # The nurse sees the patient has read the reply.
    nurse_view = (await client.get(f"{API}/threads/{thread_id}", headers=nurse)).json()
    assert nurse_view["messages"][1]["read_at"] is not None
    # A second reply is unread until the patient opens the thread; a list read does not clear it.
    await reply(client, nurse, thread_id, "Any news?")
    rows = (await client.get(f"{API}/threads", headers=patient)).json()
    assert [t["unread"] for t in rows if t["id"] == thread_id] == [1]
    assert (await client.get(f"{API}/unread", headers=patient)).json()["total"] == 1
    closed = await client.post(f"{API}/threads/{thread_id}/close", headers=nurse)
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    assert (await client.get(f"{API}/unread", headers=patient)).json()[
        "total"
    ] == 1  # closing reads nothing for them
    late = await reply(client, patient, thread_id, "One more thing")
    assert late.status_code == 409
    assert late.json()["code"] == "thread_closed"
    await client.post(f"{API}/threads/{thread_id}/read", json={}, headers=patient)
    assert (await client.get(f"{API}/unread", headers=patient)).json()["total"] == 0
    # A staff reply reopens it.
    assert (await reply(client, nurse, thread_id, "Reopening to follow up")).status_code == 201
    assert (await client.get(f"{API}/threads/{thread_id}", headers=nurse)).json()["status"] == "open"


async def test_a_retried_send_with_the_same_idempotency_key_stores_one_message_and_one_attachment(
    client: httpx.AsyncClient, db: Database, practice: Practice
) -> None:
    files = [("arm.jpg", jpeg(picture()), "image/jpeg")]
    first = await send(client, practice.headers["patient"], inbox_id=practice.primary, files=files, key="k-1")
    again = await send(client, practice.headers["patient"], inbox_id=practice.primary, files=files, key="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["message"]["id"] == first.json()["message"]["id"]
    assert again.json()["created"] is False
    assert await count(db, Message) == 1
    assert await count(db, Thread) == 1
    assert await count(db, StoredFile) == 1
    changed = await send(
        client, practice.headers["patient"], inbox_id=practice.primary, body="other", key="k-1"
    )
    assert changed.status_code == 422
    assert changed.json()["code"] == "idempotency_key_reused"
    # Concurrent retries of a reply: one message.
    thread_id = first.json()["thread_id"]
    h = {**practice.headers["nurse"], "Idempotency-Key": "reply-1"}
    results = await asyncio.gather(*(reply(client, h, thread_id, "Noted") for _ in range(4)))
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert await count(db, Message, body="Noted") == 1


async def test_bad_uploads_store_nothing(client: httpx.AsyncClient, db: Database, practice: Practice) -> None:
    html = b"<html><script>alert(1)</script></html>"
    r = await send(
        client, practice.headers["patient"], inbox_id=practice.primary, files=[("x.png", html, "image/png")]
    )
    assert r.status_code == 415, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"][0]["field"] == "files[0]"
    six = [(f"{n}.jpg", jpeg(picture((40, 30))), "image/jpeg") for n in range(6)]
    r = await send(client, practice.headers["patient"], inbox_id=practice.primary, files=six)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "files"
    traversal = [("../../etc/passwd.jpg", jpeg(picture((40, 30))), "image/jpeg")]
    ok = await send(client, practice.headers["patient"], inbox_id=practice.primary, files=traversal)
    assert ok.status_code == 201
    assert "/" not in ok.json()["message"]["attachments"][0]["name"]
    assert await count(db, Message) == 1
    assert await count(db, StoredFile) == 1


async def test_emergency_wording_raises_priority_and_returns_the_guidance(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    r = await send(
        client, practice.headers["patient"], inbox_id=practice.primary, body="I have chest pain since an hour"
    )
    assert r.status_code == 201
    guidance = " ".join(r.json()["emergency_guidance"])
    assert "911" in guidance
    assert "988" not in guidance
    urgent = (
        await client.get(f"{API}/threads", params={"filter": "urgent"}, headers=practice.headers["nurse"])
    ).json()
    assert [t["id"] for t in urgent] == [r.json()["thread_id"]]
    crisis = await send(
        client, practice.headers["patient"], inbox_id=practice.primary, body="I want to end my life"
    )
    assert "988" in " ".join(crisis.json()["emergency_guidance"])
    calm = await send(
        client, practice.headers["patient"], inbox_id=practice.primary, body="Refill my statin please"
    )
    assert calm.json()["emergency_guidance"] == []


async def test_a_message_is_due_two_business_days_later_and_turns_overdue(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    # Friday 4 December 2026, 16:00 in New York (21:00 UTC): due Tuesday 8 December at 16:00 (21:00 UTC).
    freeze_clock(datetime(2026, 12, 4, 21, 0, tzinfo=UTC))
    r = await send(client, practice.headers["patient"], inbox_id=practice.primary)
    thread_id = r.json()["thread_id"]
    view = (await client.get(f"{API}/threads/{thread_id}", headers=practice.headers["nurse"])).json()
    assert view["due_at"].startswith("2026-12-08T21:00")
    advance_clock(timedelta(days=3, hours=23, minutes=59))  # Tuesday 20:59 UTC: not yet
    overdue = await client.get(
        f"{API}/threads", params={"filter": "overdue"}, headers=practice.headers["nurse"]
    )
    assert overdue.json() == []
    advance_clock(timedelta(minutes=2))
    overdue = await client.get(
        f"{API}/threads", params={"filter": "overdue"}, headers=practice.headers["nurse"]
    )
    assert [t["id"] for t in overdue.json()] == [thread_id]
    assert (await client.get(f"{API}/unread", headers=practice.headers["nurse"])).json()["overdue"] == 1
    await reply(client, practice.headers["nurse"], thread_id, "Sorry for the wait")
    overdue = await client.get(
        f"{API}/threads", params={"filter": "overdue"}, headers=practice.headers["nurse"]
    )
    assert overdue.json() == []


async def test_assignment_and_the_mine_filter(client: httpx.AsyncClient, practice: Practice) -> None:
    thread_id = (await send(client, practice.headers["patient"], inbox_id=practice.primary)).json()[
        "thread_id"
    ]
    nurse = practice.headers["nurse"]
    r = await client.post(
        f"{API}/threads/{thread_id}/assign", json={"assignee_user_id": practice.nurse.user_id}, headers=nurse
    )
    assert r.status_code == 200
    assert r.json()["assigned_user_id"] == practice.nurse.user_id
    mine = (await client.get(f"{API}/threads", params={"filter": "mine"}, headers=nurse)).json()
    assert [t["id"] for t in mine] == [thread_id]
    unassigned = (await client.get(f"{API}/threads", params={"filter": "unassigned"}, headers=nurse)).json()
    assert unassigned == []
    outsider = await client.post(
        f"{API}/threads/{thread_id}/assign",
        json={"assignee_user_id": practice.outsider.user_id},
        headers=nurse,
    )
    assert outsider.status_code == 422
    assert outsider.json()["errors"][0]["field"] == "assignee_user_id"


async def test_the_patient_is_emailed_that_a_message_waits_without_its_content(
    settings: Any, client: httpx.AsyncClient, practice: Practice
) -> None:
    from tests.mail import smtp_server, wait_for_mail

    with smtp_server() as (received, port):
        settings.smtp_host, settings.smtp_port = "127.0.0.1", port
        thread_id = (await send(client, practice.headers["patient"], inbox_id=practice.primary)).json()[
            "thread_id"
        ]
        assert received == []  # the team is not emailed the patient's message
        await reply(client, practice.headers["nurse"], thread_id, "Your biopsy result is benign")
        await wait_for_mail(received)
    [mail] = received
    assert mail.rcpt_tos == [practice.patient.email]
    message = message_from_bytes(mail.content, policy=policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"/messages/{thread_id}" in text
    for leaked in ("biopsy", "benign", "Rash on my arm", "Primary care"):
        assert leaked not in mail.content.decode()


async def test_online_digital_em_is_proposed_from_the_physicians_time(
    client: httpx.AsyncClient, db: Database, practice: Practice
) -> None:
    from telecare.scheduling.models import Appointment, AppointmentStatus
    from tests.factories import setup_uow

    thread_id = (await send(client, practice.headers["patient"], inbox_id=practice.primary)).json()[
        "thread_id"
    ]
    physician = practice.headers["physician"]
    billing = (await client.get(f"{API}/threads/{thread_id}/billing", headers=physician)).json()
    assert billing["code"] is None
    assert any("first review" in r for r in billing["reasons"])
    await client.get(f"{API}/threads/{thread_id}", headers=physician)  # the first review
    for minutes in (6, 6):
        r = await client.post(f"{API}/threads/{thread_id}/time", json={"minutes": minutes}, headers=physician)
        assert r.status_code == 201
    billing = (await client.get(f"{API}/threads/{thread_id}/billing", headers=physician)).json()
    # No visit on record: Telecare cannot call the patient established, so nothing is proposed yet.
    assert billing["code"] is None
    assert any("New patient" in r for r in billing["reasons"])
    # A completed visit a year ago makes the patient established: 12 minutes is 99422.
    async with setup_uow(db) as s:
        from telecare.scheduling.models import VisitType

        vt = VisitType(
            org_id=practice.org,
            name="Follow-up",
            duration_minutes=30,
            modalities=["video"],
            patient_kind="established",
        )
        s.add(vt)
        await s.flush()
        start = datetime.now(UTC) - timedelta(days=365)
        assert practice.physician.practitioner_id is not None
        assert practice.patient.patient_id is not None
        s.add(
            Appointment(
                org_id=practice.org,
                patient_id=practice.patient.patient_id,
                practitioner_id=practice.physician.practitioner_id,
                visit_type_id=vt.id,
                start_at=start,
                end_at=start + timedelta(minutes=30),
                modality="video",
                booked_modality="video",
                expected_state="PA",
                booked_by_user_id=practice.patient.user_id,
                status=AppointmentStatus.COMPLETED,
            )
        )
    billing = (await client.get(f"{API}/threads/{thread_id}/billing", headers=physician)).json()
    assert billing["code"] == "99422", billing
    assert billing["minutes"] == 12
    # The nurse's minutes are clinical-staff time: not counted.
    await client.get(f"{API}/threads/{thread_id}", headers=practice.headers["nurse"])
    await client.post(
        f"{API}/threads/{thread_id}/time", json={"minutes": 15}, headers=practice.headers["nurse"]
    )
    billing = (await client.get(f"{API}/threads/{thread_id}/billing", headers=physician)).json()
    assert billing["code"] == "99422"
    assert billing["minutes"] == 12
    assert (
        await client.get(f"{API}/threads/{thread_id}/billing", headers=practice.headers["patient"])
    ).status_code == 403


async def test_overdue_threads_surface_to_the_coordinator_as_numbers_only(
    client: httpx.AsyncClient, db: Database, practice: Practice
) -> None:
    from telecare.identity.models import Role
    from tests.factories import bearer, make_user, token_for, web_login

    freeze_clock(datetime(2026, 12, 4, 21, 0, tzinfo=UTC))  # Friday 16:00 in New York: due Tuesday 16:00
    await send(client, practice.headers["patient"], inbox_id=practice.primary, body="Secret detail 4Kq")
    await send(client, practice.headers["patient"], inbox_id=practice.primary, body="chest pain again")
    advance_clock(timedelta(days=5))
    coordinator = await make_user(db, practice.org, Role.COORDINATOR)
    summary = await client.get(f"{API}/summary", headers=bearer(await token_for(db, coordinator)))
    assert summary.status_code == 200
    primary = next(r for r in summary.json() if r["inbox_id"] == practice.primary)
    assert (primary["open"], primary["overdue"], primary["unassigned"], primary["urgent"]) == (2, 2, 2, 1)
    assert "Secret detail" not in summary.text
    assert "patient" not in summary.text
    # Coordinators never read the messages themselves.
    threads = await client.get(f"{API}/threads", headers=bearer(await token_for(db, coordinator)))
    assert threads.status_code == 403
    await web_login(client, coordinator)
    page = await client.get("/messages/teams")
    assert page.status_code == 200
    assert "Primary care" in page.text
    assert "Secret detail" not in page.text
    refused = await client.get(f"{API}/summary", headers=practice.headers["nurse"])
    assert refused.status_code == 403
