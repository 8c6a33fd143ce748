"""The signaling server: who may enter a visit's room, what is relayed where, bad input, drops and rejoins,
and the audio-only switch. Real uvicorn, real WebSockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from sqlalchemy import select

from telecare.core.db import Database
from telecare.scheduling.models import Appointment, AppointmentStatus
from telecare.visits import service as visits
from telecare.visits.models import VisitEvent, VisitEventKind
from tests.factories import make_patient
from tests.visit_factories import WED_9AM_NY, make_clinic, principal_of
from tests.visits.live.conftest import Live, admitted_visit, checked_in_visit, login
from tests.visits.live.wsutil import expect, open_socket, quiet, refused_status, send

OFFER_SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def timeline(db: Database, appointment_id: int) -> list[tuple[str, str | None]]:
    async with db.unit_of_work() as s:
        rows = await s.execute(
            select(VisitEvent.kind, VisitEvent.reason)
            .where(VisitEvent.appointment_id == appointment_id)
            .order_by(VisitEvent.id)
        )
        return [(str(k), r) for k, r in rows.all()]


async def test_offer_answer_and_candidates_reach_only_the_addressee_in_the_same_visit(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    # A second, unrelated visit in progress with the same clinician an hour later.
    other_clinic_patient = await make_patient(db, clinic.org_id, with_login=True)
    assert not isinstance(other_clinic_patient, int)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    p = await open_socket(url, f"tc_session={patient.cookie}")
    welcome_p = await expect(p, "welcome")
    assert welcome_p["self"] == f"u{clinic.patient.user_id}"
    assert (welcome_p["role"], welcome_p["modality"]) == ("patient", "video")
    d = await open_socket(url, f"tc_session={doctor.cookie}")
    welcome_d = await expect(d, "welcome")
    assert welcome_d["role"] == "practitioner"
    # The patient learns that the clinician arrived; the clinician learns the patient was already there.
    joined = await expect(p, "join")
    assert (joined["from"], joined["role"]) == (welcome_d["self"], "practitioner")
    present = await expect(d, "peer")
    assert (present["from"], present["role"]) == (welcome_p["self"], "patient")

    await send(p, {"type": "offer", "to": welcome_d["self"], "sdp": OFFER_SDP})
    offer = await expect(d, "offer")
    assert offer == {"type": "offer", "sdp": OFFER_SDP, "from": welcome_p["self"]}
    await send(d, {"type": "answer", "to": welcome_p["self"], "sdp": OFFER_SDP.replace("1 2", "3 4")})
    assert (await expect(p, "answer"))["sdp"].startswith("v=0\r\no=- 3 4")
    candidate = {
        "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    await send(d, {"type": "candidate", "to": welcome_p["self"], "candidate": candidate})
    got = await expect(p, "candidate")
    assert got["candidate"]["candidate"] == candidate["candidate"]
    await send(d, {"type": "candidate", "to": welcome_p["self"], "candidate": None})
    assert (await expect(p, "candidate"))["candidate"] is None
    # Messages addressed to someone else are not delivered to the sender's own socket.
    assert not [m for m in await quiet(d) if m["type"] in ("offer", "answer", "candidate")]
    await p.close()
    await d.close()


async def test_no_login_another_patient_another_visit_and_foreign_sites_are_refused(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    stranger = await make_patient(db, clinic.org_id, with_login=True)
    assert not isinstance(stranger, int)
    stranger_login = await login(db, stranger)
    coordinator = await login(db, clinic.coordinator)
    patient = await login(db, clinic.patient)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    assert await refused_status(url) == 403  # no login
    assert await refused_status(url, "tc_session=forged-token") == 403
    assert await refused_status(url, f"tc_session={stranger_login.cookie}") == 403  # another patient
    assert await refused_status(url, f"tc_session={coordinator.cookie}") == 403  # staff, not a participant
    assert await refused_status(f"{live.ws}/ws/visits/999999/signal", f"tc_session={patient.cookie}") == 403
    # The right login from another web site (cross-site WebSocket hijacking).
    assert await refused_status(url, f"tc_session={patient.cookie}", Origin="https://evil.example") == 403
    # The participant is let in; somebody refused earlier left no trace in the room.
    p = await open_socket(url, f"tc_session={patient.cookie}", Origin=live.base)
    assert (await expect(p, "welcome"))["role"] == "patient"
    assert not [m for m in await quiet(p) if m["type"] == "join"]
    await p.close()


async def test_room_opens_only_after_admission_and_never_after_the_visit_ends(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await checked_in_visit(db, clinic)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    assert await refused_status(url, f"tc_session={patient.cookie}") == 403  # waiting, not admitted
    async with live.client(doctor.cookie) as http:
        r = await http.post(f"/api/v1/visits/{appt}/admit", headers={"X-CSRF-Token": doctor.csrf})
        assert r.status_code == 200, r.text
    p = await open_socket(url, f"tc_session={patient.cookie}")
    await expect(p, "welcome")
    async with live.client(doctor.cookie) as http:
        r = await http.post(f"/api/v1/visits/{appt}/end", headers={"X-CSRF-Token": doctor.csrf})
        assert r.json()["status"] == "completed"
    assert (await expect(p, "ended"))["status"] == "completed"
    await p.close()
    assert await refused_status(url, f"tc_session={patient.cookie}") == 403
    assert await refused_status(url, f"tc_session={doctor.cookie}") == 403


async def test_malformed_messages_are_answered_with_errors_and_the_room_keeps_working(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    p = await open_socket(url, f"tc_session={patient.cookie}")
    me = (await expect(p, "welcome"))["self"]
    d = await open_socket(url, f"tc_session={doctor.cookie}")
    doc = (await expect(d, "welcome"))["self"]
    bad_frames: list[tuple[str | bytes, str]] = [
        ("not json at all", "not_json"),
        ("[1, 2, 3]", "not_object"),
        (json.dumps({"type": "shout", "to": doc}), "invalid"),
        (json.dumps({"type": "offer", "to": "../admin", "sdp": OFFER_SDP}), "invalid"),
        (json.dumps({"type": "offer", "to": doc}), "invalid"),
        (json.dumps({"type": "offer", "to": doc, "sdp": "x" * 16_001}), "invalid"),
        (json.dumps({"type": "offer", "to": doc, "sdp": OFFER_SDP, "admin": True}), "invalid"),
        (
            json.dumps(
                {"type": "candidate", "to": doc, "candidate": {"candidate": "c", "sdpMLineIndex": -1}}
            ),
            "invalid",
        ),
        (
            json.dumps({"type": "modality", "modality": "in-person", "reason": "connection_quality"}),
            "invalid",
        ),
        (json.dumps({"type": "join", "role": "practitioner"}), "invalid"),  # server-only message types
        ("x" * 30_000, "too_large"),
        (b"\x00\xff\x00binary", "not_json"),
    ]
    for frame, code in bad_frames:
        await p.send(frame)
        error = await expect(p, "error")
        assert error["code"] == code, (frame[:40], error)
        assert "x" * 20 not in error["detail"]  # the input is never echoed back
    # Nothing malformed reached the clinician (a late presence message from PostgreSQL NOTIFY may), and the
    # room still relays valid messages both ways.
    assert not [m for m in await quiet(d) if m["type"] in ("offer", "candidate")]
    await send(p, {"type": "offer", "to": doc, "sdp": OFFER_SDP})
    assert (await expect(d, "offer"))["from"] == me
    await send(d, {"type": "answer", "to": me, "sdp": OFFER_SDP})
    assert (await expect(p, "answer"))["from"] == doc
    await p.close()
    await d.close()


async def test_a_dropped_participant_rejoins_the_same_visit_and_the_timeline_records_it(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    d = await open_socket(url, f"tc_session={doctor.cookie}")
    await expect(d, "welcome")
    p = await open_socket(url, f"tc_session={patient.cookie}")
    first = await expect(p, "welcome")
    await send(p, {"type": "connected"})  # media flowing: the documented start
    joined = await expect(d, "join")
    # The patient's network drops (TCP closed without a bye).
    p.transport.abort()  # type: ignore[attr-defined]
    left = await expect(d, "leave")
    assert (left["from"], left["conn"]) == (first["self"], joined["conn"])
    p2 = await open_socket(url, f"tc_session={patient.cookie}")
    again = await expect(p2, "welcome")
    assert again["self"] == first["self"]
    assert again["conn"] != first["conn"]
    rejoined = await expect(d, "join")
    assert rejoined["conn"] == again["conn"]
    # Opening the visit in a second window replaces the first connection instead of doubling it.
    p3 = await open_socket(url, f"tc_session={patient.cookie}")
    await expect(p3, "welcome")
    assert (await expect(p2, "replaced"))["type"] == "replaced"
    await asyncio.sleep(0.3)
    kinds = [k for k, _ in await timeline(db, appt)]
    assert kinds[-4:] == ["admitted", "connected", "disconnected", "reconnected"]
    await p3.close()
    await d.close()


async def test_switching_to_audio_only_is_recorded_with_its_reason_and_reaches_everyone(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    url = f"{live.ws}/ws/visits/{appt}/signal"
    p = await open_socket(url, f"tc_session={patient.cookie}")
    await expect(p, "welcome")
    d = await open_socket(url, f"tc_session={doctor.cookie}")
    await expect(d, "welcome")
    await send(d, {"type": "modality", "modality": "audio", "reason": "patient_declined_video"})
    assert (await expect(p, "modality"))["modality"] == "audio"
    assert (await expect(d, "modality"))["modality"] == "audio"
    # Going back to video needs the "video_restored" reason; a wrong one is refused and changes nothing.
    await send(p, {"type": "modality", "modality": "video", "reason": "connection_quality"})
    assert (await expect(p, "error"))["code"] == "validation_failed"
    await send(p, {"type": "modality", "modality": "video", "reason": "video_restored"})
    assert (await expect(d, "modality"))["modality"] == "video"
    events = [e for e in await timeline(db, appt) if e[0] == "modality_changed"]
    assert events == [("modality_changed", "patient_declined_video"), ("modality_changed", "video_restored")]
    async with db.unit_of_work() as s:
        row = await s.get(Appointment, appt)
        assert row is not None
        assert row.modality == "video"
    await p.close()
    await d.close()


async def test_waiting_room_and_queue_update_live_until_admission(db: Database, live: Live) -> None:
    clinic = await make_clinic(db)
    appt = await checked_in_visit(db, clinic)
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    q = await open_socket(f"{live.ws}/ws/visits/queue", f"tc_session={doctor.cookie}")
    first = await expect(q, "queue")
    assert [(e["appointment_id"], e["status"], e["attested_state"]) for e in first["entries"]] == [
        (appt, "checked_in", "PA")
    ]
    # The patient opens the waiting room: checked in -> waiting, and the clinician's queue shows it.
    w = await open_socket(f"{live.ws}/ws/visits/{appt}/status", f"tc_session={patient.cookie}")
    status = await expect(w, "status")
    assert (status["status"], status["can_join"]) == ("waiting", True)
    update = await expect(q, "queue")
    (entry,) = update["entries"]
    assert entry["status"] == "waiting"
    assert entry["patient"].startswith("Given")
    assert entry["waiting_since"] == (WED_9AM_NY - timedelta(minutes=10)).isoformat()
    # The patient of another visit cannot watch this one; a patient cannot open the clinician queue.
    other = await make_patient(db, clinic.org_id, with_login=True)
    assert not isinstance(other, int)
    other_login = await login(db, other)
    assert (
        await refused_status(f"{live.ws}/ws/visits/{appt}/status", f"tc_session={other_login.cookie}") == 403
    )
    assert await refused_status(f"{live.ws}/ws/visits/queue", f"tc_session={patient.cookie}") == 403
    async with live.client(doctor.cookie) as http:
        r = await http.post(f"/api/v1/visits/{appt}/admit", headers={"X-CSRF-Token": doctor.csrf})
        assert r.status_code == 200, r.text
    seen = await expect(w, "status")
    if seen["change"] == "entered_waiting_room":  # the patient's own move into the waiting room
        seen = await expect(w, "status")
    assert (seen["status"], seen["change"]) == ("in_progress", "admitted")
    assert (await expect(q, "queue"))["entries"] == []
    async with db.unit_of_work() as s:
        kinds = [e.kind for e in await visits.timeline(s, principal_of(clinic.doctor), appointment_id=appt)]
    assert kinds == [
        VisitEventKind.CHECKED_IN,
        VisitEventKind.ENTERED_WAITING_ROOM,
        VisitEventKind.ADMITTED,
    ]
    async with db.unit_of_work() as s:
        row = await s.get(Appointment, appt)
        assert row is not None
        assert row.status == AppointmentStatus.IN_PROGRESS
    await w.close()
    await q.close()
