"""Break the glass (45 CFR 164.312(a)(2)(ii); docs/security.md#break-the-glass and #goal-6): a clinician
outside the care team opens one patient's record after giving a reason and re-entering their password. The
grant lasts at most 60 minutes (the clock is moved, not waited for), every read under it is audited with
purpose ETREAT, the organization's privacy contact gets an email through a real SMTP server (aiosmtpd) that
names no patient, and every admin gets an in-app notification."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from telecare.access.models import BreakGlassGrant
from telecare.audit.models import AuditEntry
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import advance_clock, freeze_clock
from telecare.identity.models import Patient, Role
from telecare.notifications.models import Notification
from tests.conftest import make_settings
from tests.factories import Account, bearer, make_org, make_patient, make_user, token_for, web_login

PRIVACY = "privacy.officer@hospital-example.org"
REASON = "Unresponsive in ED, needs medication history"


@dataclass
class Inbox:
    messages: list[Message] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content)
        msg["X-Envelope-To"] = ",".join(envelope.rcpt_tos)
        self.messages.append(msg)
        return "250 OK"

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        for _ in range(int(timeout / 0.05)):
            if len(self.messages) >= count:
                break
            await asyncio.sleep(0.05)
        return self.messages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp: tuple[Inbox, int]) -> Settings:
    """The shared test settings plus the SMTP server, and a configured grant length of 4 hours that the
    60-minute ceiling (docs/security.md#goal-6) must cut down."""
    return make_settings(
        database_url, tmp_path / "data", smtp_host="127.0.0.1", smtp_port=smtp[1], break_glass_minutes=240
    )


@dataclass
class Scene:
    org: int
    doctor: Account  # not on the patient's care team
    admins: list[Account]
    patient_id: int
    neighbour_id: int
    token: str


async def _scene(db: Database) -> Scene:
    org = await make_org(db, privacy_email=PRIVACY)
    doctor = await make_user(db, org, Role.PHYSICIAN)
    admins = [await make_user(db, org, Role.ADMIN), await make_user(db, org, Role.ADMIN)]
    patient = await make_patient(
        db,
        org,
        mrn="MRN-BTG-1",
        given_name="Ophelia",
        family_name="Quartermaine",
        birth_date=datetime(1950, 7, 14, tzinfo=UTC).date(),
    )
    neighbour = await make_patient(db, org, mrn="MRN-BTG-2")
    assert isinstance(patient, int)
    assert isinstance(neighbour, int)
    return Scene(org, doctor, admins, patient, neighbour, await token_for(db, doctor))


async def _audit(db: Database, patient_id: int) -> list[AuditEntry]:
    async with db.unit_of_work() as s:
        return list(
            (
                await s.execute(
                    select(AuditEntry).where(AuditEntry.patient_id == patient_id).order_by(AuditEntry.id)
                )
            ).scalars()
        )


async def _grants(db: Database, patient_id: int) -> list[BreakGlassGrant]:
    async with db.unit_of_work() as s:
        return list(
            (
                await s.execute(select(BreakGlassGrant).where(BreakGlassGrant.patient_id == patient_id))
            ).scalars()
        )


async def test_reason_and_password_are_required_and_a_wrong_password_is_refused_and_audited(
    client: httpx.AsyncClient, db: Database, smtp: tuple[Inbox, int]
) -> None:
    sc = await _scene(db)
    url = f"/api/v1/patients/{sc.patient_id}/break-glass"
    headers = bearer(sc.token)

    r = await client.post(url, json={"password": sc.doctor.password}, headers=headers)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["reason"]
    r = await client.post(url, json={"reason": "because", "password": sc.doctor.password}, headers=headers)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["reason"]
    r = await client.post(url, json={"reason": REASON}, headers=headers)
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["password"]

    r = await client.post(url, json={"reason": REASON, "password": "not my password"}, headers=headers)
    assert r.status_code == 403
    assert r.json()["code"] == "break_glass_refused"
    assert "Quartermaine" not in r.text

    assert await _grants(db, sc.patient_id) == []
    denied = [e for e in await _audit(db, sc.patient_id) if e.resource_type == "BreakGlass"]
    assert [(e.outcome, e.actor_user_id, e.action) for e in denied] == [
        ("denied", sc.doctor.user_id, "create")
    ]
    r = await client.get(f"/api/v1/patients/{sc.patient_id}", headers=headers)
    assert r.status_code == 404
    assert smtp[0].messages == []


async def test_grant_opens_one_patient_for_at_most_60_minutes_and_reads_are_audited_as_etreat(
    client: httpx.AsyncClient, db: Database
) -> None:
    start = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    freeze_clock(start)
    sc = await _scene(db)
    headers = bearer(sc.token)
    assert (await client.get(f"/api/v1/patients/{sc.patient_id}", headers=headers)).status_code == 404

    r = await client.post(
        f"/api/v1/patients/{sc.patient_id}/break-glass",
        json={"reason": REASON, "password": sc.doctor.password},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    grant = r.json()
    assert grant["patient_id"] == sc.patient_id
    # Configured for 240 minutes; the ceiling holds it to 60.
    expires = datetime.fromisoformat(grant["expires_at"])
    assert expires - datetime.fromisoformat(grant["created_at"]) == timedelta(minutes=60)

    r = await client.get(f"/api/v1/patients/{sc.patient_id}", headers=headers)
    assert r.status_code == 200
    assert r.json()["family_name"] == "Quartermaine"
    r = await client.get(f"/api/v1/patients/{sc.patient_id}/$export", headers=headers)
    assert r.status_code == 200
    assert r.json()["patient"]["mrn"] == "MRN-BTG-1"
    r = await client.get("/api/v1/patients", headers=headers)
    assert [p["id"] for p in r.json()["items"]] == [sc.patient_id]
    # One patient only: the neighbour stays closed.
    assert (await client.get(f"/api/v1/patients/{sc.neighbour_id}", headers=headers)).status_code == 404

    advance_clock(timedelta(minutes=59, seconds=59))
    assert (await client.get(f"/api/v1/patients/{sc.patient_id}", headers=headers)).status_code == 200

    advance_clock(timedelta(seconds=1))  # exactly 60 minutes after the grant
    r = await client.get(f"/api/v1/patients/{sc.patient_id}", headers=headers)
    assert r.status_code == 404
    assert "Quartermaine" not in r.text
    r = await client.get("/api/v1/patients", headers=headers)
    assert r.json()["items"] == []
    assert r.json()["total"] == 0

    entries = await _audit(db, sc.patient_id)
    opened = [e for e in entries if e.action == "break-glass"]
    assert [(e.purpose, e.outcome, e.actor_user_id) for e in opened] == [
        ("ETREAT", "success", sc.doctor.user_id)
    ]
    reads = [
        e
        for e in entries
        if e.actor_user_id == sc.doctor.user_id and e.outcome == "success" and e.action != "break-glass"
    ]
    # read, read, export, search: every access under the grant carries the emergency purpose.
    assert [(e.action, e.purpose) for e in reads] == [
        ("read", "ETREAT"),
        ("export", "ETREAT"),
        ("search", "ETREAT"),
        ("read", "ETREAT"),
    ]
    late = [
        e for e in entries if e.actor_user_id == sc.doctor.user_id and e.at >= start + timedelta(minutes=60)
    ]
    assert [(e.action, e.outcome) for e in late] == [("read", "denied")]


async def test_privacy_contact_is_emailed_without_patient_details_and_admins_notified_in_app(
    client: httpx.AsyncClient, db: Database, smtp: tuple[Inbox, int]
) -> None:
    sc = await _scene(db)
    r = await client.post(
        f"/api/v1/patients/{sc.patient_id}/break-glass",
        json={"reason": REASON, "password": sc.doctor.password},
        headers=bearer(sc.token),
    )
    assert r.status_code == 201, r.text

    messages = await smtp[0].wait_for(1)
    assert len(messages) == 1
    mail = messages[0]
    assert mail["X-Envelope-To"] == PRIVACY
    assert mail["To"] == PRIVACY
    assert "emergency access" in mail["Subject"].lower()
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    text = payload.decode()
    assert f"patient record {sc.patient_id}" in text
    assert f"user {sc.doctor.user_id}" in text
    async with db.unit_of_work() as s:
        patient = await s.get(Patient, sc.patient_id)
        assert patient is not None
        for value in (patient.given_name, patient.family_name, patient.mrn, "1950-07-14", "07/14/1950"):
            assert value not in text
            assert value not in mail["Subject"]
        assert REASON not in text  # the reason may hold clinical detail; it stays in the audited grant
        notes = list((await s.execute(select(Notification).order_by(Notification.id))).scalars())
    in_app = sorted(n.recipient_user_id for n in notes if n.recipient_user_id is not None)
    assert in_app == sorted(a.user_id for a in sc.admins)
    assert all(n.kind == "break_glass" and "Quartermaine" not in n.body for n in notes)
    emailed = [n for n in notes if n.recipient_email == PRIVACY]
    assert len(emailed) == 1
    assert emailed[0].emailed_at is not None


async def test_refused_when_not_a_clinician_or_patient_in_another_organization(
    client: httpx.AsyncClient, db: Database, smtp: tuple[Inbox, int]
) -> None:
    sc = await _scene(db)
    other_org = await make_org(db)
    foreign = await make_patient(db, other_org)
    coordinator = await make_user(db, sc.org, Role.COORDINATOR)
    r = await client.post(
        f"/api/v1/patients/{sc.patient_id}/break-glass",
        json={"reason": REASON, "password": coordinator.password},
        headers=bearer(await token_for(db, coordinator)),
    )
    assert r.status_code == 403
    r = await client.post(
        f"/api/v1/patients/{foreign}/break-glass",
        json={"reason": REASON, "password": sc.doctor.password},
        headers=bearer(sc.token),
    )
    assert r.status_code == 404
    assert await _grants(db, sc.patient_id) == []
    assert isinstance(foreign, int)
    assert await _grants(db, foreign) == []
    assert smtp[0].messages == []


async def test_web_chart_offers_the_emergency_form_to_a_clinician_outside_the_care_team(
    client: httpx.AsyncClient, db: Database, smtp: tuple[Inbox, int]
) -> None:
    sc = await _scene(db)
    csrf = await web_login(client, sc.doctor)

    page = await client.get(f"/patients/{sc.patient_id}")
    assert page.status_code == 403
    assert f'action="/patients/{sc.patient_id}/break-glass"' in page.text
    assert re.search(r'<textarea[^>]*name="reason"', page.text)
    assert re.search(
        r'<input[^>]*name="password"[^>]*type="password"|type="password"[^>]*name="password"', page.text
    )
    for value in ("Ophelia", "Quartermaine", "MRN-BTG-1", "1950-07-14"):
        assert value not in page.text

    r = await client.post(
        f"/patients/{sc.patient_id}/break-glass",
        data={"reason": REASON, "password": "wrong password", "csrf_token": csrf},
    )
    assert r.status_code in (401, 403)
    assert "Quartermaine" not in r.text
    assert await _grants(db, sc.patient_id) == []

    r = await client.post(
        f"/patients/{sc.patient_id}/break-glass",
        data={"reason": REASON, "password": sc.doctor.password, "csrf_token": csrf},
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/patients/{sc.patient_id}"
    chart = await client.get(f"/patients/{sc.patient_id}")
    assert chart.status_code == 200
    assert "Quartermaine" in chart.text
    assert len(await _grants(db, sc.patient_id)) == 1
    reads = [e for e in await _audit(db, sc.patient_id) if e.action == "read" and e.outcome == "success"]
    assert reads
    assert {e.purpose for e in reads} == {"ETREAT"}
    assert len(await smtp[0].wait_for(1)) == 1
