"""Background work runs once however many workers serve: two real `telecare serve` processes on one
PostgreSQL database, both ticking every 50 ms, escalate each overdue alert once, mark each no-show once and
send each reminder once (core/jobs.py). SQLite needs no such test: every writing transaction there is the
only writer of the file, in this process or any other."""

from __future__ import annotations

import asyncio
import email
import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.monitoring.models import Alert
from telecare.notifications.models import Notification
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.visits.models import VisitEvent, VisitEventKind
from tests.factories import setup_uow
from tests.monitoring.conftest import build_clinic
from tests.subprocesses import Server, start_server
from tests.visit_factories import make_clinic

ALERTS = 120  # enough that one sweep takes long enough for the other worker's tick to land inside it
VISITS = 8


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


async def _seed(db: Database) -> None:
    monitoring = await build_clinic(db)
    visits = await make_clinic(db)
    now = utc_now()
    async with setup_uow(db, "overdue alerts and due visits for the background jobs") as s:
        for i in range(ALERTS):
            s.add(
                Alert(
                    org_id=monitoring.org,
                    patient_id=monitoring.patient,
                    rule_code="bp_crisis",
                    tier="immediate",
                    open_key=f"{monitoring.patient}:once{i}",
                    title="Blood pressure in crisis range",
                    detail="test alert",
                    created_at=now - timedelta(hours=1),
                    deadline_at=now - timedelta(minutes=30),
                )
            )
        assert visits.patient.patient_id
        assert visits.doctor.practitioner_id
        for i in range(2 * VISITS):
            # the first half started two hours ago (past the 15-minute grace: no-shows), the second half
            # starts in 30 minutes (the one-hour reminder is due), all booked three days ago
            start = now - timedelta(hours=2, minutes=i) if i < VISITS else now + timedelta(minutes=30 + i)
            s.add(
                Appointment(
                    org_id=visits.org_id,
                    patient_id=visits.patient.patient_id,
                    practitioner_id=visits.doctor.practitioner_id,
                    visit_type_id=visits.visit_type_id,
                    start_at=start,
                    end_at=start + timedelta(minutes=30),
                    modality=Modality.VIDEO,
                    booked_modality=Modality.VIDEO,
                    status=AppointmentStatus.BOOKED,
                    expected_state="PA",
                    booked_by_user_id=visits.patient.user_id,
                    created_at=now - timedelta(days=3),
                )
            )


async def _counts(db: Database) -> dict[str, int]:
    async with db.unit_of_work(read_only=True) as s:

        async def count(stmt: Any) -> int:
            return int((await s.execute(stmt)).scalar_one())

        return {
            "escalated": await count(select(func.count(Alert.id)).where(Alert.escalated_at.is_not(None))),
            "escalation_notes": await count(
                select(func.count(Notification.id)).where(Notification.kind == "rpm_alert_escalation")
            ),
            "noshow_events": await count(
                select(func.count(VisitEvent.id)).where(VisitEvent.kind == VisitEventKind.NOSHOW)
            ),
            "reminder_notes": await count(
                select(func.count(Notification.id)).where(Notification.kind == "visit_reminder")
            ),
        }


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_workers_run_each_background_job_once(
    settings: Settings, db: Database, tmp_path: Path, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    env = {
        "TELECARE_SMTP_HOST": "127.0.0.1",
        "TELECARE_SMTP_PORT": str(port),
        "TELECARE_RPM_BACKGROUND_INTERVAL_SECONDS": "0.05",
        "TELECARE_VISITS_BACKGROUND_INTERVAL_SECONDS": "0.05",
    }
    servers = [start_server(settings, cwd=tmp_path, extra_env=env) for _ in range(2)]
    try:
        await _seed(db)  # once both are ticking: the work appears to both in one commit
        want = {"escalated": ALERTS, "noshow_events": VISITS, "reminder_notes": VISITS}
        for _ in range(300):
            found = await _counts(db)
            if all(found[k] >= v for k, v in want.items()):
                break
            await asyncio.sleep(0.1)
        for _ in range(300):  # mail leaves after commit
            if len(box.messages) >= ALERTS + VISITS:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # many more ticks on both workers: nothing is done twice
        found = await _counts(db)
    finally:
        for server in servers:
            _stop(server)
    logs = "\n".join(s.log.read_text()[-1500:] for s in servers)
    assert found == {
        "escalated": ALERTS,
        "escalation_notes": ALERTS,
        "noshow_events": VISITS,
        "reminder_notes": VISITS,
    }, logs
    subjects = [str(m["Subject"]) for m in box.messages]
    escalations = [s for s in subjects if "Escalated RPM alert" in s]
    assert len(escalations) == len(set(escalations)) == ALERTS
    assert len(subjects) - len(escalations) == VISITS  # one reminder per visit
