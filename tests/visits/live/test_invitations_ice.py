"""Guests by one-time invitation (interpreter, caregiver) and the ICE servers handed to browsers."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from telecare.audit.models import AuditEntry
from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import advance_clock, utc_now
from telecare.visits.models import VisitParticipant
from tests.visit_factories import make_clinic
from tests.visits.live.conftest import Live, admitted_visit, checked_in_visit, login
from tests.visits.live.wsutil import expect, open_socket, refused_status


async def invite(live: Live, cookie: str, csrf: str, appt: int, role: str, name: str) -> httpx.Response:
    async with live.client(cookie) as http:
        return await http.post(
            f"/api/v1/visits/{appt}/invitations",
            json={"role": role, "display_name": name},
            headers={"X-CSRF-Token": csrf},
        )


async def redeem(live: Live, url: str) -> httpx.Response:
    path = url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    async with httpx.AsyncClient(base_url=live.base) as anonymous:
        landing = await anonymous.get(f"/{path}")
        assert "Join the visit" in landing.text  # opening the link uses nothing up
        return await anonymous.post(f"/{path}")


async def test_a_guest_joins_once_by_invitation_and_never_after_the_visit(db: Database, live: Live) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    other = await admitted_visit(db, clinic, start=clinic_slot(hours=1))  # the clock is now 9:50
    patient, doctor = await login(db, clinic.patient), await login(db, clinic.doctor)
    made = await invite(live, doctor.cookie, doctor.csrf, appt, "interpreter", "Ana (Spanish)")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["role"] == "interpreter"
    assert body["url"].startswith("http://127.0.0.1:8000/join/")  # TELECARE_BASE_URL + one-time token
    # The clinician cannot invite a caregiver (the patient decides who else hears their visit).
    refused = await invite(live, doctor.cookie, doctor.csrf, appt, "caregiver", "Someone")
    assert refused.status_code == 403
    # The guest redeems the link: a guest cookie for this visit, and the call page.
    first = await redeem(live, body["url"])
    assert first.status_code == 303
    assert first.headers["location"] == f"/visits/{appt}/device-test"
    guest_cookie = first.cookies["tc_guest"]
    # A second use of the same link is refused, and says why.
    again = await redeem(live, body["url"])
    assert again.status_code == 403
    assert "already been used" in again.text
    assert "tc_guest" not in again.cookies
    # With that cookie the guest's browser gets the visit's pages, and no other visit's.
    async with httpx.AsyncClient(base_url=live.base, cookies={"tc_guest": guest_cookie}) as guest_http:
        page = await guest_http.get(f"/visits/{appt}/call")
        assert page.status_code == 200
        assert 'data-role="interpreter"' in page.text
        assert 'data-allowed="yes"' in page.text
        ice = (await guest_http.get("/api/v1/visits/ice-servers")).json()
        assert ice == {"iceServers": [], "ttl": 3600}
        assert (await guest_http.get(f"/visits/{other}/call")).status_code == 403
        assert (await guest_http.get("/home")).status_code in (303, 401)  # no portal access
    # The guest enters the room alongside patient and clinician; their peer id carries no name.
    url = f"{live.ws}/ws/visits/{appt}/signal"
    d = await open_socket(url, f"tc_session={doctor.cookie}")
    await expect(d, "welcome")
    g = await open_socket(url, f"tc_guest={guest_cookie}")
    welcome = await expect(g, "welcome")
    assert welcome["role"] == "interpreter"
    assert welcome["self"] == f"g{body['participant_id']}"
    joined = await expect(d, "join")
    assert (joined["from"], joined["role"], joined["name"]) == (
        welcome["self"],
        "interpreter",
        "Ana (Spanish)",
    )
    # A guest cannot change the visit's modality (it decides billing).
    await g.send('{"type": "modality", "modality": "audio", "reason": "connection_quality"}')
    assert (await expect(g, "error"))["code"] == "forbidden"
    # The guest cookie opens this visit only.
    assert await refused_status(f"{live.ws}/ws/visits/{other}/signal", f"tc_guest={guest_cookie}") == 403
    # The patient adds a caregiver: four people is the limit.
    care = await invite(live, patient.cookie, patient.csrf, appt, "caregiver", "Daughter")
    assert care.status_code == 201
    full = await invite(live, patient.cookie, patient.csrf, appt, "interpreter", "Second interpreter")
    assert full.status_code == 409
    assert full.json()["code"] == "visit_full"
    await g.close()
    # The clinician ends the visit: the redeemed guest is out, an unused link no longer works.
    async with live.client(doctor.cookie) as http:
        assert (
            await http.post(f"/api/v1/visits/{appt}/end", headers={"X-CSRF-Token": doctor.csrf})
        ).status_code == 200
    assert await refused_status(url, f"tc_guest={guest_cookie}") == 403
    late = await redeem(live, care.json()["url"])
    assert late.status_code == 403
    assert "expired" in late.text
    await d.close()
    async with db.unit_of_work() as s:
        rows = (await s.execute(select(VisitParticipant).where(VisitParticipant.user_id.is_(None)))).scalars()
        guests = {r.display_name: r for r in rows}
        assert guests["Ana (Spanish)"].invite_used_at is not None
        assert guests["Ana (Spanish)"].joined_at is not None
        assert guests["Daughter"].invite_used_at is None
        assert all(len(r.invite_token_hash or "") == 64 for r in guests.values())  # digests, not tokens
        denied = (
            await s.execute(
                select(AuditEntry.detail).where(
                    AuditEntry.actor_kind == "guest", AuditEntry.outcome == "denied"
                )
            )
        ).scalars()
        assert sorted(d["event"] for d in denied) == ["expired", "reuse"]


def clinic_slot(*, hours: int) -> Any:
    from tests.visit_factories import WED_9AM_NY

    return WED_9AM_NY + timedelta(hours=hours)


async def test_an_invitation_expires_an_hour_after_the_slot_even_if_never_used(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await checked_in_visit(db, clinic)
    patient = await login(db, clinic.patient)
    made = await invite(live, patient.cookie, patient.csrf, appt, "caregiver", "Son")
    assert made.status_code == 201
    advance_clock(timedelta(minutes=10 + 30 + 61))  # check-in was 10 min before a 30 min slot
    r = await redeem(live, made.json()["url"])
    assert r.status_code == 403
    assert "expired" in r.text
    # A made-up link is simply invalid.
    assert (await redeem(live, f"{live.base}/join/not-a-real-token")).status_code == 403


async def test_ice_servers_come_from_settings_with_short_lived_turn_rest_credentials(
    db: Database, settings: Settings
) -> None:
    from telecare.app import create_app

    configured = settings.model_copy(
        update={
            "stun_urls": ["stun:stun.telecare.test:3478"],
            "turn_urls": ["turn:turn.telecare.test:3478?transport=udp", "turns:turn.telecare.test:5349"],
            "turn_secret": SecretStr("coturn-static-auth-secret"),
            "turn_ttl_seconds": 600,
        }
    )
    app = create_app(configured)
    clinic = await make_clinic(db)
    patient = await login(db, clinic.patient)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            assert (await http.get("/api/v1/visits/ice-servers")).status_code == 401
            now = int(utc_now().timestamp())
            http.cookies.set("tc_session", patient.cookie)
            r = await http.get("/api/v1/visits/ice-servers")
    assert r.status_code == 200
    body = r.json()
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:stun.telecare.test:3478"]}
    assert turn["urls"] == ["turn:turn.telecare.test:3478?transport=udp", "turns:turn.telecare.test:5349"]
    expiry, _, tag = turn["username"].partition(":")
    assert tag == f"u{clinic.patient.user_id}"  # no name or email in TURN server logs
    assert now + 600 <= int(expiry) <= now + 602
    expected = base64.b64encode(
        hmac.new(b"coturn-static-auth-secret", turn["username"].encode(), hashlib.sha1).digest()
    ).decode()
    assert turn["credential"] == expected
    assert body["ttl"] == 600


async def test_without_turn_settings_browsers_get_no_relay_and_no_credentials(
    db: Database, live: Live
) -> None:
    clinic = await make_clinic(db)
    patient = await login(db, clinic.patient)
    async with live.client(patient.cookie) as http:
        r = await http.get("/api/v1/visits/ice-servers")
    assert r.json() == {"iceServers": [], "ttl": 3600}


async def test_an_invitation_from_a_cookie_without_the_csrf_token_is_refused(
    db: Database, live: Live
) -> None:
    """A cross-site form could otherwise invite a stranger into the visit with the clinician's cookie."""
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    doctor = await login(db, clinic.doctor)
    async with live.client(doctor.cookie) as http:
        r = await http.post(
            f"/api/v1/visits/{appt}/invitations", json={"role": "interpreter", "display_name": "Eve"}
        )
    assert r.status_code == 403, r.text
    async with db.unit_of_work() as s:
        guests = (
            await s.execute(select(VisitParticipant).where(VisitParticipant.appointment_id == appt))
        ).scalars()
        assert [g for g in guests if g.display_name == "Eve"] == []
    made = await invite(live, doctor.cookie, doctor.csrf, appt, "interpreter", "Ana")
    assert made.status_code == 201, made.text
