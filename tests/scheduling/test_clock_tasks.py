"""Reminders through a real SMTP server (aiosmtpd) and no-show marking, driven by the clock."""

from __future__ import annotations

import asyncio
import email
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.scheduling import tasks
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.visits.models import VisitEvent
from tests.visit_factories import NOW, WED_9AM_NY, book_visit, make_clinic


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def mail_db(settings: Settings, smtp: tuple[Inbox, int]) -> AsyncIterator[Database]:
    from telecare.domains import install as install_domains

    install_domains()
    database = Database(settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp[1]}))
    try:
        yield database
    finally:
        await database.dispose()


def parts(message: Message) -> tuple[str, bytes | None]:
    text, ics = "", None
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True).decode()  # type: ignore[union-attr]
        if part.get_content_type() == "text/calendar":
            ics = part.get_payload(decode=True)  # type: ignore[assignment]
    return text, ics


async def wait_for(inbox: Inbox, count: int) -> None:
    for _ in range(100):
        if len(inbox.messages) >= count:
            return
        await asyncio.sleep(0.02)


async def test_reminders_arrive_at_each_offset_with_ics_and_link_and_no_health_details(
    mail_db: Database, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    db = mail_db
    clinic = await make_clinic(db)
    freeze_clock(NOW - timedelta(days=2))
    appt = await book_visit(db, clinic, modality=Modality.VIDEO)
    await wait_for(inbox, 1)
    assert len(inbox.messages) == 1  # booking confirmation
    assert inbox.messages[0]["To"] == clinic.patient.email

    # 25 h before: nothing due yet.
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(hours=25))).reminders_sent == 0
    # 24 h before: the day-before reminder; a second run does not repeat it.
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(hours=24))).reminders_sent == 1
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(hours=23))).reminders_sent == 0
    await wait_for(inbox, 2)
    reminder = inbox.messages[1]
    assert reminder["Subject"] == "Reminder: your telehealth appointment"
    text, ics = parts(reminder)
    assert f"/visits/{appt.id}/check-in" in text
    assert "Wednesday 02 December 2026 at 09:00 EST" in text
    assert ics is not None
    assert b"DTSTART:20261202T140000Z" in ics
    assert b"SUMMARY:Telehealth appointment" in ics
    assert f"/visits/{appt.id}/check-in".encode() in ics
    # No health details: neither the visit type nor the clinician's name.
    for leaked in ("Follow-up", "Physician"):
        assert leaked not in text
        assert leaked.encode() not in ics
    # 1 h before: the second reminder.
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(minutes=60))).reminders_sent == 1
    await wait_for(inbox, 3)
    assert len(inbox.messages) == 3


async def test_reminder_offsets_already_past_at_booking_are_not_sent(
    mail_db: Database, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    db = mail_db
    clinic = await make_clinic(db)
    freeze_clock(WED_9AM_NY - timedelta(hours=3))  # booked 3 h before: the 24 h reminder is past
    await book_visit(db, clinic, modality=Modality.AUDIO)
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(hours=2))).reminders_sent == 0
    assert (await tasks.run_due(db, now=WED_9AM_NY - timedelta(minutes=59))).reminders_sent == 1
    await wait_for(inbox, 2)
    text, _ = parts(inbox.messages[1])
    assert "by phone (audio only)" in text


async def test_a_patient_who_never_joins_becomes_a_noshow_after_the_grace_period(db: Database) -> None:
    clinic = await make_clinic(db)
    freeze_clock(NOW)
    appt = await book_visit(db, clinic, modality=Modality.VIDEO)
    assert (await tasks.run_due(db, now=WED_9AM_NY + timedelta(minutes=14, seconds=59))).noshows == 0
    report = await tasks.run_due(db, now=WED_9AM_NY + timedelta(minutes=15))
    assert report.noshows == 1
    async with db.unit_of_work() as s:
        row = await s.get(Appointment, appt.id)
        assert row is not None
        assert row.status == AppointmentStatus.NOSHOW
        assert row.noshow_at == WED_9AM_NY + timedelta(minutes=15)
        kinds = (
            (await s.execute(select(VisitEvent.kind).where(VisitEvent.appointment_id == appt.id)))
            .scalars()
            .all()
        )
        assert list(kinds) == ["noshow"]
    assert (await tasks.run_due(db, now=WED_9AM_NY + timedelta(hours=1))).noshows == 0
