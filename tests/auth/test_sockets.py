"""Every WebSocket through one authenticator and one guard (auth/sockets.py): who may open each socket, and
revocation while it is open. Signing out, disabling a user, revoking a token, leaving a care team and a
break-the-glass grant running out close the socket (4401) or stop its stream of that patient within 5 s,
carried by the `auth.revoked` event (the timed re-check is 300 s here) or, without a bus, the timed
re-check. Real uvicorn, real WebSockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from telecare.access.flows import break_the_glass
from telecare.access.models import BreakGlassGrant
from telecare.auth import service as auth_service
from telecare.auth import sessions
from telecare.core.db import Database
from telecare.core.time import advance_clock, utc_now
from telecare.identity import service as identity
from telecare.identity.models import CareTeamMember, Role, User
from telecare.monitoring.alerts import ALERT_TOPIC
from telecare.scheduling import service as scheduling
from telecare.visits.live import invitations
from telecare.visits.models import ParticipantRole
from tests.factories import (
    PASSWORD,
    Account,
    add_to_care_team,
    make_patient,
    make_user,
    setup_uow,
    token_for,
)
from tests.visit_factories import Clinic, make_clinic, make_doctor, principal_of
from tests.visits.live.conftest import Live, Login, admitted_visit, checked_in_visit, login
from tests.visits.live.wsutil import expect, open_socket, quiet, refused_status

WITHIN = 5.0  # seconds: the promise to the privacy officer
_alert_ids = itertools.count(9_000_000)


# ---- helpers ----------------------------------------------------------------------------------------------


async def unverified_login(db: Database, account: Account) -> str:
    """A staff session that has not completed TOTP."""
    async with db.unit_of_work() as s:
        user = await s.get(User, account.user_id)
        assert user is not None
        return (await sessions.create_web_session(s, user, client_addr="127.0.0.1", mfa_verified=False)).token


async def guest_cookie(app: Any, clinic: Clinic, appointment_id: int) -> str:
    """An interpreter invited by the visit's clinician, invitation redeemed: their `tc_guest` cookie."""
    db: Database = app.state.db
    async with db.unit_of_work() as s:
        _, token = await invitations.invite_guest(
            s,
            principal_of(clinic.doctor),
            appointment_id=appointment_id,
            role=ParticipantRole.INTERPRETER,
            display_name="Interpreter",
        )
    async with db.unit_of_work() as s:
        guest = await invitations.redeem_invitation(s, token=token, client_addr="127.0.0.1")
    return invitations.guest_cookie_value(app.state.settings, guest)


async def socket_for(url: str, credential: str) -> ClientConnection:
    """`credential`: `tc_session=...`, `tc_guest=...` or `Bearer ...`."""
    if credential.startswith("Bearer "):
        return await open_socket(url, Authorization=credential)
    return await open_socket(url, credential)


async def refused(url: str, credential: str | None, **headers: str) -> bool:
    if credential is not None and credential.startswith("Bearer "):
        return await refused_status(url, Authorization=credential, **headers) == 403
    return await refused_status(url, credential, **headers) == 403


async def close_code(ws: ClientConnection, within: float = WITHIN) -> int:
    """The code the server closes the socket with, within `within` seconds (fails otherwise)."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else -1
    raise AssertionError("unreachable")


async def push_alert(app: Any, org_id: int, patient_id: int) -> int:
    """An alert change as the monitoring service publishes it after commit (ids and a title only)."""
    alert_id = next(_alert_ids)
    await app.state.events.emit(
        ALERT_TOPIC,
        {"alert_id": alert_id, "org_id": org_id, "patient_id": patient_id, "change": "opened", "title": "BP"},
    )
    return alert_id


async def streamed(ws: ClientConnection, app: Any, org_id: int, patients: list[int], marker: int) -> set[int]:
    """Push one alert for each of `patients`, then one for `marker` (a patient the socket streams): the
    patients whose alert reached the socket before the marker's."""
    sent = {await push_alert(app, org_id, pid): pid for pid in patients}
    last = await push_alert(app, org_id, marker)
    seen: set[int] = set()
    while True:
        message = await expect(ws, "alert")
        if message["alert_id"] == last:
            return seen
        if message["alert_id"] in sent:
            seen.add(sent[message["alert_id"]])


async def stops_streaming(ws: ClientConnection, app: Any, org_id: int, patient: int, marker: int) -> bool:
    """Within 5 s the socket no longer forwards `patient`'s alerts (while still forwarding `marker`'s)."""
    deadline = asyncio.get_running_loop().time() + WITHIN
    while asyncio.get_running_loop().time() < deadline:
        if patient not in await streamed(ws, app, org_id, [patient], marker):
            return True
        await asyncio.sleep(0.2)
    return False


async def care_team_member_id(db: Database, patient_id: int, practitioner_id: int) -> int:
    from sqlalchemy import select

    async with db.unit_of_work() as s:
        member_id = await s.scalar(
            select(CareTeamMember.id).where(
                CareTeamMember.patient_id == patient_id, CareTeamMember.practitioner_id == practitioner_id
            )
        )
    assert member_id is not None
    return member_id


async def monitoring_ward(db: Database) -> tuple[int, Account, Account, Account, Account, list[int]]:
    """An organization with a nurse and a physician on the care team of two patients, an outside
    physician, an admin and a coordinator."""
    org_id = (await make_clinic(db)).org_id
    nurse = await make_user(db, org_id, Role.NURSE)
    physician = await make_user(db, org_id, Role.PHYSICIAN)
    admin = await make_user(db, org_id, Role.ADMIN)
    coordinator = await make_user(db, org_id, Role.COORDINATOR)
    patients = [
        p for p in [await make_patient(db, org_id), await make_patient(db, org_id)] if isinstance(p, int)
    ]
    for pid in patients:
        for member in (nurse, physician):
            assert member.practitioner_id is not None
            await add_to_care_team(db, patient_id=pid, practitioner_id=member.practitioner_id, org_id=org_id)
    return org_id, nurse, physician, admin, coordinator, patients


# ---- who may open which socket ---------------------------------------------------------------------------


async def test_alerts_socket_admits_nurses_and_physicians_and_streams_only_their_patients(
    db: Database, app: Any, live: Live
) -> None:
    org_id, nurse, physician, admin, coordinator, (p1, p2) = await monitoring_ward(db)
    outsider = await make_user(db, org_id, Role.PHYSICIAN)
    therapist = await make_user(db, org_id, Role.THERAPIST)
    patient = await make_patient(db, org_id, with_login=True)
    assert isinstance(patient, Account)
    url = f"{live.ws}/ws/monitoring/alerts"
    admitted = {
        "nurse on the care team": f"tc_session={(await login(db, nurse)).cookie}",
        "physician on the care team": f"tc_session={(await login(db, physician)).cookie}",
        "nurse by bearer token": f"Bearer {await token_for(db, nurse)}",
    }
    for name, credential in admitted.items():
        ws = await socket_for(url, credential)
        await expect(ws, "ready")
        assert await streamed(ws, app, org_id, [p1], p2) == {p1}, name
        await ws.close()
    # An allowed role without a relationship connects and sees nothing of these patients.
    ws = await socket_for(url, f"tc_session={(await login(db, outsider)).cookie}")
    await expect(ws, "ready")
    await push_alert(app, org_id, p1)
    assert not [m for m in await quiet(ws) if m["type"] == "alert"]
    await ws.close()
    refusals: dict[str, str | None] = {
        "no credential": None,
        "forged session": "tc_session=forged",
        "forged token": "Bearer tc_1_forged",
        "nurse without TOTP": f"tc_session={await unverified_login(db, nurse)}",
        "therapist": f"tc_session={(await login(db, therapist)).cookie}",
        "coordinator": f"tc_session={(await login(db, coordinator)).cookie}",
        "admin": f"tc_session={(await login(db, admin)).cookie}",
        "patient": f"tc_session={(await login(db, patient)).cookie}",
    }
    for name, refusal in refusals.items():
        assert await refused(url, refusal), name
    nurse_cookie = admitted["nurse on the care team"]
    assert await refused(url, nurse_cookie, Origin="https://evil.example"), "cross-site"


async def test_visit_sockets_admit_the_visits_people_and_refuse_everyone_else(
    db: Database, app: Any, live: Live
) -> None:
    clinic = await make_clinic(db)
    waiting = await checked_in_visit(db, clinic)
    in_call = await admitted_visit(db, clinic, start=clinic_start(hours=1))  # the clock stays at 9:50
    stranger = await make_patient(db, clinic.org_id, with_login=True)
    assert isinstance(stranger, Account)
    nurse = await make_user(db, clinic.org_id, Role.NURSE)
    therapist = await make_user(db, clinic.org_id, Role.THERAPIST)
    admin = await make_user(db, clinic.org_id, Role.ADMIN)
    cookie = {
        name: f"tc_session={(await login(db, account)).cookie}"
        for name, account in {
            "patient": clinic.patient,
            "doctor": clinic.doctor,
            "other patient": stranger,
            "nurse": nurse,
            "therapist": therapist,
            "coordinator": clinic.coordinator,
            "admin": admin,
        }.items()
    }
    guest = f"tc_guest={await guest_cookie(app, clinic, waiting)}"
    doctor_token = f"Bearer {await token_for(db, clinic.doctor)}"
    unverified = f"tc_session={await unverified_login(db, clinic.doctor)}"
    status = f"{live.ws}/ws/visits/{waiting}/status"
    queue = f"{live.ws}/ws/visits/queue"
    allowed: dict[str, list[str]] = {
        status: [cookie["patient"], cookie["doctor"], doctor_token, guest],
        queue: [cookie["doctor"], doctor_token, cookie["nurse"], cookie["therapist"]],
    }
    denied: dict[str, list[str | None]] = {
        status: [
            None,
            cookie["other patient"],
            cookie["nurse"],
            cookie["coordinator"],
            cookie["admin"],
            unverified,
        ],
        queue: [None, cookie["patient"], cookie["coordinator"], cookie["admin"], guest, unverified],
    }
    for url, credentials in allowed.items():
        for credential in credentials:
            ws = await socket_for(url, credential)
            await expect(ws, "status" if url == status else "queue")
            await ws.close()
    for url, refusals in denied.items():
        for maybe in refusals:
            assert await refused(url, maybe), (url, maybe)
    # The signaling room, once the patient is admitted.
    signal = f"{live.ws}/ws/visits/{in_call}/signal"
    guest_in_call = f"tc_guest={await guest_cookie(app, clinic, in_call)}"
    for credential in (cookie["patient"], cookie["doctor"], guest_in_call):
        ws = await socket_for(signal, credential)
        await expect(ws, "welcome")
        await ws.close()
    for maybe in (None, cookie["other patient"], cookie["coordinator"], cookie["nurse"], guest, unverified):
        assert await refused(signal, maybe), maybe


def clinic_start(*, hours: int) -> Any:
    from tests.visit_factories import WED_9AM_NY

    return WED_9AM_NY + timedelta(hours=hours)


# ---- revocation while open -------------------------------------------------------------------------------


async def test_signing_out_closes_that_sessions_sockets_within_seconds(
    db: Database, app: Any, live: Live
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    doctor = await login(db, clinic.doctor)
    other_tab = await login(db, clinic.doctor)  # another session of the same doctor stays signed in
    patient = await login(db, clinic.patient)
    q = await open_socket(f"{live.ws}/ws/visits/queue", f"tc_session={doctor.cookie}")
    await expect(q, "queue")
    alerts = await open_socket(f"{live.ws}/ws/monitoring/alerts", f"tc_session={doctor.cookie}")
    await expect(alerts, "ready")
    kept = await open_socket(f"{live.ws}/ws/visits/queue", f"tc_session={other_tab.cookie}")
    await expect(kept, "queue")
    call = await open_socket(f"{live.ws}/ws/visits/{appt}/signal", f"tc_session={patient.cookie}")
    await expect(call, "welcome")

    await sign_out(live, doctor)
    assert await close_code(q) == 4401
    assert await close_code(alerts) == 4401
    await sign_out(live, patient)
    assert await close_code(call) == 4401
    await quiet(kept, 0.5)  # raises if the server closed it
    assert kept.close_code is None
    await kept.close()


async def sign_out(live: Live, who: Login) -> None:
    async with live.client(who.cookie) as http:
        r = await http.post("/logout", data={"csrf_token": who.csrf})
        assert r.status_code == 303


async def test_disabling_a_user_closes_their_sockets_within_seconds(
    db: Database, app: Any, live: Live
) -> None:
    _, nurse, _, admin, _, _ = await monitoring_ward(db)
    url = f"{live.ws}/ws/monitoring/alerts"
    by_session = await open_socket(url, f"tc_session={(await login(db, nurse)).cookie}")
    by_token = await socket_for(url, f"Bearer {await token_for(db, nurse)}")
    for ws in (by_session, by_token):
        await expect(ws, "ready")
    async with app.state.db.unit_of_work() as s:
        await identity.set_active(s, principal_of(admin), user_id=nurse.user_id, active=False)
    assert await close_code(by_session) == 4401
    assert await close_code(by_token) == 4401


async def test_a_disabled_patient_leaves_the_waiting_room_socket(db: Database, app: Any, live: Live) -> None:
    clinic = await make_clinic(db)
    appt = await checked_in_visit(db, clinic)
    admin = await make_user(db, clinic.org_id, Role.ADMIN)
    w = await open_socket(
        f"{live.ws}/ws/visits/{appt}/status", f"tc_session={(await login(db, clinic.patient)).cookie}"
    )
    await expect(w, "status")
    async with app.state.db.unit_of_work() as s:
        await identity.set_active(s, principal_of(admin), user_id=clinic.patient.user_id, active=False)
    assert await close_code(w) == 4401


async def test_revoking_a_token_closes_its_socket_and_no_other(db: Database, app: Any, live: Live) -> None:
    _, nurse, _, admin, _, _ = await monitoring_ward(db)
    url = f"{live.ws}/ws/monitoring/alerts"
    token = await token_for(db, nurse)
    by_token = await socket_for(url, f"Bearer {token}")
    by_session = await open_socket(url, f"tc_session={(await login(db, nurse)).cookie}")
    for ws in (by_token, by_session):
        await expect(ws, "ready")
    token_id = int(token.removeprefix(sessions.TOKEN_PREFIX).split("_", 1)[0])
    async with app.state.db.unit_of_work() as s:
        await auth_service.revoke_token(s, principal_of(admin), token_id=token_id)
    assert await close_code(by_token) == 4401
    await quiet(by_session, 0.5)  # raises if the server closed it
    assert by_session.close_code is None
    await by_session.close()


async def test_leaving_the_care_team_stops_that_patients_alerts_within_seconds(
    db: Database, app: Any, live: Live
) -> None:
    org_id, nurse, _, _, coordinator, (p1, p2) = await monitoring_ward(db)
    ws = await open_socket(f"{live.ws}/ws/monitoring/alerts", f"tc_session={(await login(db, nurse)).cookie}")
    await expect(ws, "ready")
    assert await streamed(ws, app, org_id, [p1], p2) == {p1}
    assert nurse.practitioner_id is not None
    member_id = await care_team_member_id(db, p1, nurse.practitioner_id)
    async with app.state.db.unit_of_work() as s:
        await identity.remove_care_team_member(
            s, principal_of(coordinator), patient_id=p1, member_id=member_id
        )
    assert await stops_streaming(ws, app, org_id, p1, p2)
    await ws.close()


async def test_an_expired_break_glass_grant_stops_that_patients_alerts_within_seconds(
    db: Database, app: Any, live: Live
) -> None:
    org_id, _, _, _, _, (_, p2) = await monitoring_ward(db)
    emergency = await make_patient(db, org_id)
    assert isinstance(emergency, int)
    physician = await make_user(db, org_id, Role.PHYSICIAN)
    assert physician.practitioner_id is not None
    await add_to_care_team(db, patient_id=p2, practitioner_id=physician.practitioner_id, org_id=org_id)
    async with db.unit_of_work() as s:
        grant = await break_the_glass(
            s,
            principal_of(physician),
            patient_id=emergency,
            reason="Unresponsive at home, family called",
            password=PASSWORD,
        )
    # The grant runs out three seconds from now (as if its 60 minutes were over); nobody publishes that.
    async with setup_uow(db, "test set-up: a grant about to expire") as s:
        await s.execute(
            update(BreakGlassGrant)
            .where(BreakGlassGrant.id == grant.id)
            .values(expires_at=utc_now() + timedelta(seconds=3))
        )
    cookie = f"tc_session={(await login(db, physician)).cookie}"
    ws = await open_socket(f"{live.ws}/ws/monitoring/alerts", cookie)
    await expect(ws, "ready")
    assert await streamed(ws, app, org_id, [emergency], p2) == {emergency}
    await asyncio.sleep(3)
    assert await stops_streaming(ws, app, org_id, emergency, p2)
    await ws.close()


@pytest.mark.parametrize("recheck_seconds", [1.0])
async def test_the_timed_recheck_closes_a_socket_revoked_without_an_event(
    db: Database, live: Live, recheck_seconds: float
) -> None:
    _, nurse, _, _, _, _ = await monitoring_ward(db)
    session = await login(db, nurse)
    ws = await open_socket(f"{live.ws}/ws/monitoring/alerts", f"tc_session={session.cookie}")
    await expect(ws, "ready")
    # Revoked by a process without the event bus (the test's own database handle, like a CLI command).
    async with db.unit_of_work() as s:
        await sessions.revoke_all_credentials(s, nurse.user_id)
    assert await close_code(ws) == 4401


@pytest.mark.parametrize("recheck_seconds", [1.0])
async def test_a_visit_socket_closes_once_its_patient_is_out_of_reach(
    db: Database, live: Live, recheck_seconds: float
) -> None:
    clinic = await make_clinic(db)
    appt = await checked_in_visit(db, clinic)
    colleague = await make_doctor(db, clinic.org_id)
    assert colleague.practitioner_id is not None
    doctor = await login(db, clinic.doctor)
    w = await open_socket(f"{live.ws}/ws/visits/{appt}/status", f"tc_session={doctor.cookie}")
    await expect(w, "status")
    # The visit goes to a colleague; the first doctor has no other relationship with the patient. Done
    # without the event bus, so only the guard's timed re-check of the patient can notice.
    async with db.unit_of_work() as s:
        await scheduling.reassign_practitioner(
            s,
            principal_of(clinic.coordinator),
            appointment_id=appt,
            practitioner_id=colleague.practitioner_id,
        )
    assert await close_code(w) == 4403


@pytest.mark.parametrize("recheck_seconds", [1.0])
async def test_a_guest_leaves_once_the_invitation_runs_out(
    db: Database, app: Any, live: Live, recheck_seconds: float
) -> None:
    clinic = await make_clinic(db)
    appt = await admitted_visit(db, clinic)
    guest = f"tc_guest={await guest_cookie(app, clinic, appt)}"
    status = await socket_for(f"{live.ws}/ws/visits/{appt}/status", guest)
    await expect(status, "status")
    call = await socket_for(f"{live.ws}/ws/visits/{appt}/signal", guest)
    await expect(call, "welcome")
    advance_clock(timedelta(hours=3))  # past the slot and its hour of overrun
    assert await close_code(status) == 4401
    assert await close_code(call) == 4401
