"""A real uvicorn server (in this process, on a free loopback port) around the test app, so WebSockets run
over real sockets on both databases; accounts get real web sessions (cookie + CSRF token)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from telecare.auth import sessions
from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.identity.models import User
from telecare.scheduling import service as scheduling
from telecare.scheduling.models import Modality
from telecare.visits import service as visits
from telecare.visits.models import LocationType
from telecare.visits.schemas import CheckIn
from tests.factories import Account
from tests.visit_factories import NOW, WED_9AM_NY, Clinic, principal_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    base: str  # http://127.0.0.1:port
    ws: str  # ws://127.0.0.1:port

    def client(self, cookie: str | None = None) -> httpx.AsyncClient:
        cookies = {"tc_session": cookie} if cookie else None
        return httpx.AsyncClient(base_url=self.base, cookies=cookies, timeout=10)


@pytest.fixture
async def live(app: Any) -> AsyncIterator[Live]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws_max_size=65_536
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@dataclass
class Login:
    cookie: str
    csrf: str

    def headers(self) -> dict[str, str]:
        return {"Cookie": f"tc_session={self.cookie}"}


async def login(db: Database, account: Account) -> Login:
    """A real web session (staff with TOTP done), as the login pages would create it."""
    async with db.unit_of_work() as s:
        user = await s.get(User, account.user_id)
        assert user is not None
        new = await sessions.create_web_session(s, user, client_addr="127.0.0.1", mfa_verified=True)
        return Login(new.token, new.csrf_token)


def attest(clinic: Clinic, state: str = "PA") -> CheckIn:
    return CheckIn(
        location_type=LocationType.HOME,
        address_line="12 Elm Street",
        city="Scranton",
        state=state,
        consent_text_id=clinic.consent_id,
        consent_accepted=True,
    )


async def checked_in_visit(db: Database, clinic: Clinic, *, start: Any = WED_9AM_NY) -> int:
    """Booked on Tuesday, checked in ten minutes before the Wednesday visit (the clock stays there)."""
    freeze_clock(NOW)
    async with db.unit_of_work() as s:
        appt = await scheduling.book_appointment(
            s,
            principal_of(clinic.patient),
            practitioner_id=clinic.doctor.practitioner_id or 0,
            visit_type_id=clinic.visit_type_id,
            start_at=start,
            modality=Modality.VIDEO,
            expected_state="PA",
        )
    freeze_clock(start - timedelta(minutes=10))
    async with db.unit_of_work() as s:
        await visits.check_in(s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic))
    return appt.id


async def admitted_visit(db: Database, clinic: Clinic, *, start: Any = WED_9AM_NY) -> int:
    appointment_id = await checked_in_visit(db, clinic, start=start)
    async with db.unit_of_work() as s:
        await visits.admit(s, principal_of(clinic.doctor), appointment_id=appointment_id)
    return appointment_id
