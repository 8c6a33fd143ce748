"""Booking, licensure at booking, double booking (also concurrent), notice period and late cancellations."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from telecare.access.service import PatientNotAccessible
from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.licensure.service import ProviderNotLicensedError
from telecare.scheduling import availability, service
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.scheduling.service import NoticePeriodPassed, SlotUnavailable
from tests.factories import Account, make_patient
from tests.visit_factories import NOW, WED_9AM_NY, Clinic, make_clinic, make_doctor, principal_of


async def book(
    db: Database,
    clinic: Clinic,
    who: Account,
    *,
    start: datetime = WED_9AM_NY,
    patient_id: int | None = None,
    state: str = "PA",
    practitioner_id: int | None = None,
) -> Appointment:
    async with db.unit_of_work() as s:
        return await service.book_appointment(
            s,
            principal_of(who),
            practitioner_id=practitioner_id or clinic.doctor.practitioner_id or 0,
            visit_type_id=clinic.visit_type_id,
            start_at=start,
            modality=Modality.VIDEO,
            expected_state=state,
            patient_id=patient_id,
        )


async def test_patient_sees_slots_books_one_and_it_disappears(db: Database) -> None:
    clinic = await make_clinic(db)
    freeze_clock(NOW)
    async with db.unit_of_work() as s:
        found = await availability.find_slots(
            s,
            principal_of(clinic.patient),
            visit_type_id=clinic.visit_type_id,
            state="PA",
            first_day=date(2026, 12, 2),
            days=1,
        )
    # 09:00-12:00 New York in 15-minute steps for a 30-minute visit: 09:00 ... 11:30 = 11 slots.
    assert len(found.slots) == 11
    assert found.slots[0].start_at == WED_9AM_NY
    assert found.message is None
    appt = await book(db, clinic, clinic.patient)
    assert appt.status == AppointmentStatus.BOOKED
    assert appt.end_at == WED_9AM_NY + timedelta(minutes=30)
    async with db.unit_of_work() as s:
        again = await availability.find_slots(
            s,
            principal_of(clinic.patient),
            visit_type_id=clinic.visit_type_id,
            state="PA",
            first_day=date(2026, 12, 2),
            days=1,
        )
    starts = [x.start_at for x in again.slots]
    # 09:00, 09:15 (would overlap) and 08:45 are gone; 09:30 is free.
    assert WED_9AM_NY not in starts
    assert WED_9AM_NY + timedelta(minutes=15) not in starts
    assert starts[0] == WED_9AM_NY + timedelta(minutes=30)


async def test_booking_offers_only_licensed_practitioners_and_says_why_when_nobody_is(db: Database) -> None:
    clinic = await make_clinic(db, patient_state="NJ")
    freeze_clock(NOW)
    async with db.unit_of_work() as s:
        found = await availability.find_slots(
            s,
            principal_of(clinic.patient),
            visit_type_id=clinic.visit_type_id,
            state="NJ",
            first_day=date(2026, 12, 2),
            days=2,
        )
    assert found.slots == []
    assert found.message is not None
    assert "No practitioner is licensed to see a patient located in NJ" in found.message
    assert found.unlicensed[0].reasons == ("No licence or compact privilege covers NJ.",)
    with pytest.raises(ProviderNotLicensedError) as err:
        await book(db, clinic, clinic.patient, state="NJ")
    assert "NJ" in err.value.detail
    # A colleague licensed in NJ is offered.
    colleague = await make_doctor(db, clinic.org_id, states=("NJ",))
    async with db.unit_of_work() as s:
        found = await availability.find_slots(
            s,
            principal_of(clinic.patient),
            visit_type_id=clinic.visit_type_id,
            state="NJ",
            first_day=date(2026, 12, 2),
            days=1,
        )
    assert {x.practitioner_id for x in found.slots} == {colleague.practitioner_id}
    assert found.slots[0].licence_basis == "state_licence"


async def test_coordinator_books_on_behalf_and_a_patient_cannot_book_for_someone_else(db: Database) -> None:
    clinic = await make_clinic(db)
    other = await make_patient(db, clinic.org_id)
    assert isinstance(other, int)
    freeze_clock(NOW)
    appt = await book(db, clinic, clinic.coordinator, patient_id=other)
    assert appt.patient_id == other
    assert appt.booked_by_user_id == clinic.coordinator.user_id
    # Another patient is outside a patient's reach: answered like an unknown patient (404), not 403.
    with pytest.raises(PatientNotAccessible):
        await book(db, clinic, clinic.patient, patient_id=other, start=WED_9AM_NY + timedelta(hours=1))


async def test_the_same_or_an_overlapping_time_cannot_be_booked_twice(db: Database) -> None:
    clinic = await make_clinic(db)
    other = await make_patient(db, clinic.org_id)
    assert isinstance(other, int)
    freeze_clock(NOW)
    await book(db, clinic, clinic.patient)
    with pytest.raises(SlotUnavailable):
        await book(db, clinic, clinic.coordinator, patient_id=other)
    with pytest.raises(SlotUnavailable):
        await book(db, clinic, clinic.coordinator, patient_id=other, start=WED_9AM_NY + timedelta(minutes=15))


@pytest.mark.parametrize("offset_minutes", [0, 15])
async def test_concurrent_bookings_of_one_slot_yield_exactly_one_appointment(
    db: Database, offset_minutes: int
) -> None:
    """Eight patients race for 09:00 (or, with offset 15, half race for 09:15, which overlaps 09:00)."""
    clinic = await make_clinic(db)
    patients = []
    for _ in range(8):
        pid = await make_patient(db, clinic.org_id)
        assert isinstance(pid, int)
        patients.append(pid)
    freeze_clock(NOW)

    async def attempt(i: int, pid: int) -> str:
        start = WED_9AM_NY + timedelta(minutes=offset_minutes * (i % 2))
        try:
            await book(db, clinic, clinic.coordinator, patient_id=pid, start=start)
        except SlotUnavailable:
            return "refused"
        return "booked"

    results = await asyncio.gather(*(attempt(i, pid) for i, pid in enumerate(patients)))
    assert sorted(results) == ["booked"] + ["refused"] * 7
    async with db.unit_of_work() as s:
        count = await s.scalar(
            select(func.count())
            .select_from(Appointment)
            .where(Appointment.status == AppointmentStatus.BOOKED)
        )
    assert count == 1


async def test_patient_cannot_reschedule_inside_the_notice_period_but_can_before(db: Database) -> None:
    clinic = await make_clinic(db)
    freeze_clock(NOW)
    appt = await book(db, clinic, clinic.patient)
    async with db.unit_of_work() as s:
        moved = await service.reschedule_appointment(
            s, principal_of(clinic.patient), appointment_id=appt.id, start_at=WED_9AM_NY + timedelta(hours=1)
        )
    assert moved.rescheduled_from_id == appt.id
    freeze_clock(moved.start_at - timedelta(hours=23))
    with pytest.raises(NoticePeriodPassed):
        async with db.unit_of_work() as s:
            await service.reschedule_appointment(
                s,
                principal_of(clinic.patient),
                appointment_id=moved.id,
                start_at=WED_9AM_NY + timedelta(hours=2),
            )
    async with db.unit_of_work() as s:
        old = await s.get(Appointment, appt.id)
        assert old is not None
        assert old.status == AppointmentStatus.CANCELLED
        assert old.late_cancel is False


async def test_cancellation_inside_the_notice_period_is_recorded_as_late(db: Database) -> None:
    clinic = await make_clinic(db)
    freeze_clock(NOW)
    early = await book(db, clinic, clinic.patient)
    late = await book(db, clinic, clinic.patient, start=datetime(2026, 12, 3, 14, 0, tzinfo=UTC))
    freeze_clock(datetime(2026, 12, 2, 15, 0, tzinfo=UTC))  # 23 h before `late`, 1 h after `early` started
    async with db.unit_of_work() as s:
        cancelled = await service.cancel_appointment(
            s, principal_of(clinic.patient), appointment_id=late.id, reason="work"
        )
    assert cancelled.late_cancel is True
    freeze_clock(NOW)
    third = await book(db, clinic, clinic.patient, start=datetime(2026, 12, 4, 14, 0, tzinfo=UTC))
    async with db.unit_of_work() as s:
        on_time = await service.cancel_appointment(s, principal_of(clinic.patient), appointment_id=third.id)
    assert on_time.late_cancel is False
    assert early.id != third.id


async def test_an_evening_visit_is_checked_against_the_local_date_not_the_utc_date(db: Database) -> None:
    """20:00 New York time on 2 December is 01:00 UTC on 3 December; a licence ending 2 December covers it."""
    from datetime import time

    from tests.factories import add_license
    from tests.visit_factories import add_weekly

    clinic = await make_clinic(db, doctor_states=())
    doc = clinic.doctor.practitioner_id
    assert doc is not None
    await add_license(db, practitioner_id=doc, org_id=clinic.org_id, state="PA", expires_on=date(2026, 12, 2))
    await add_weekly(db, practitioner_id=doc, org_id=clinic.org_id, weekday=2, start=time(19), end=time(21))
    freeze_clock(NOW)
    evening = datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    appt = await book(db, clinic, clinic.patient, start=evening)
    assert appt.start_at == evening
    async with db.unit_of_work() as s:
        found = await availability.find_slots(
            s,
            principal_of(clinic.patient),
            visit_type_id=clinic.visit_type_id,
            state="PA",
            first_day=date(2026, 12, 3),
            days=1,
        )
    assert found.slots == []  # the licence has expired by Thursday
    assert found.unlicensed[0].reasons == ("The PA licence expired on 2026-12-02.",)
