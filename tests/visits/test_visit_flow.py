"""Check-in (window, location, consent, licensure re-check) and the visit state machine with its timeline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from telecare.audit.models import AuditEntry
from telecare.core.db import Database
from telecare.core.errors import Forbidden, ValidationFailed
from telecare.core.time import freeze_clock
from telecare.scheduling import service as scheduling
from telecare.scheduling import tasks
from telecare.scheduling.models import Appointment, AppointmentStatus, Modality
from telecare.scheduling.service import AppointmentNotFound
from telecare.visits import service as visits
from telecare.visits.models import CheckInAttestation, ConsentAcceptance, LocationType, ModalityChangeReason
from telecare.visits.schemas import CheckIn
from tests.factories import make_patient
from tests.visit_factories import NOW, WED_9AM_NY, Clinic, book_visit, make_clinic, make_doctor, principal_of


def attest(clinic: Clinic, state: str = "PA", location: LocationType = LocationType.HOME) -> CheckIn:
    return CheckIn(
        location_type=location,
        address_line="12 Elm Street",
        city="Scranton",
        state=state,
        consent_text_id=clinic.consent_id,
        consent_accepted=True,
    )


async def booked(db: Database, clinic: Clinic, modality: Modality = Modality.VIDEO) -> Appointment:
    freeze_clock(NOW)
    return await book_visit(db, clinic, modality=modality)


async def test_check_in_opens_thirty_minutes_before_and_records_location_and_consent(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await booked(db, clinic)
    freeze_clock(WED_9AM_NY - timedelta(minutes=31))
    with pytest.raises(visits.CheckInNotOpen):
        async with db.unit_of_work() as s:
            await visits.check_in(
                s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic)
            )
    freeze_clock(WED_9AM_NY - timedelta(minutes=30))
    with pytest.raises(ValidationFailed) as refused:
        async with db.unit_of_work() as s:
            await visits.check_in(
                s,
                principal_of(clinic.patient),
                appointment_id=appt.id,
                data=attest(clinic).model_copy(update={"consent_accepted": False}),
            )
    assert refused.value.errors[0].field == "consent_accepted"
    async with db.unit_of_work() as s:
        outcome = await visits.check_in(
            s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic)
        )
    assert outcome.can_join is True
    assert outcome.appointment.status == AppointmentStatus.CHECKED_IN
    async with db.unit_of_work() as s:
        row = (await s.execute(select(CheckInAttestation))).scalar_one()
        assert (row.location_type, row.city, row.state) == ("home", "Scranton", "PA")
        consent = (await s.execute(select(ConsentAcceptance))).scalar_one()
        assert consent.version == 1
        assert consent.accepted_by_user_id == clinic.patient.user_id
        assert consent.accepted_at == WED_9AM_NY - timedelta(minutes=30)


async def test_attesting_another_state_than_booked_blocks_the_visit_for_both_sides_and_flags_it(
    db: Database,
) -> None:
    clinic = await make_clinic(db)  # doctor licensed in PA only
    appt = await booked(db, clinic)
    freeze_clock(WED_9AM_NY - timedelta(minutes=10))
    async with db.unit_of_work() as s:
        outcome = await visits.check_in(
            s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic, "NJ")
        )
    assert outcome.can_join is False
    assert "not licensed to treat you while you are in NJ" in outcome.reasons[0]
    assert "No licence or compact privilege covers NJ." in outcome.reasons
    async with db.unit_of_work() as s:
        patient_side = await visits.can_join(s, principal_of(clinic.patient), appointment_id=appt.id)
        doctor_side = await visits.can_join(s, principal_of(clinic.doctor), appointment_id=appt.id)
    assert patient_side.allowed is False
    assert doctor_side.allowed is False
    with pytest.raises(visits.VisitBlockedByLicensure):
        async with db.unit_of_work() as s:
            await visits.admit(s, principal_of(clinic.doctor), appointment_id=appt.id)
    async with db.unit_of_work() as s:
        flagged = await scheduling.flagged_for_reassignment(s, principal_of(clinic.coordinator))
    assert [a.id for a in flagged] == [appt.id]
    # The blocked visit is not a no-show: it waits for the coordinator.
    assert (await tasks.run_due(db, now=WED_9AM_NY + timedelta(minutes=20))).noshows == 0
    # Re-assignment to a colleague licensed in NJ lifts the block; the patient can then join.
    colleague = await make_doctor(db, clinic.org_id, states=("NJ",))
    async with db.unit_of_work() as s:
        moved = await scheduling.reassign_practitioner(
            s,
            principal_of(clinic.coordinator),
            appointment_id=appt.id,
            practitioner_id=colleague.practitioner_id or 0,
        )
    assert moved.licensure_blocked_at is None
    async with db.unit_of_work() as s:
        again = await visits.check_in(
            s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic, "NJ")
        )
    assert again.can_join is True


async def test_full_visit_writes_the_timeline_and_audits_each_step(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await booked(db, clinic)
    freeze_clock(WED_9AM_NY - timedelta(minutes=5))
    patient, doctor = principal_of(clinic.patient), principal_of(clinic.doctor)
    async with db.unit_of_work() as s:
        await visits.check_in(s, patient, appointment_id=appt.id, data=attest(clinic))
    async with db.unit_of_work() as s:
        await visits.enter_waiting_room(s, patient, appointment_id=appt.id)
    async with db.unit_of_work() as s:
        queue = await visits.clinician_queue(s, doctor)
    assert [(q.appointment.id, q.attested_state) for q in queue] == [(appt.id, "PA")]
    freeze_clock(WED_9AM_NY)
    async with db.unit_of_work() as s:
        await visits.admit(s, doctor, appointment_id=appt.id)
        await visits.mark_connected(s, doctor, appointment_id=appt.id)
        await visits.mark_connected(s, patient, appointment_id=appt.id)
    freeze_clock(WED_9AM_NY + timedelta(minutes=8))
    with pytest.raises(ValidationFailed):
        async with db.unit_of_work() as s:
            await visits.switch_modality(
                s,
                doctor,
                appointment_id=appt.id,
                to_modality=Modality.AUDIO,
                reason=ModalityChangeReason.VIDEO_RESTORED,
            )
    async with db.unit_of_work() as s:
        await visits.switch_modality(
            s,
            patient,
            appointment_id=appt.id,
            to_modality=Modality.AUDIO,
            reason=ModalityChangeReason.CONNECTION_QUALITY,
        )
    freeze_clock(WED_9AM_NY + timedelta(minutes=10))
    async with db.unit_of_work() as s:
        await visits.record_disconnect(s, patient, appointment_id=appt.id)
    freeze_clock(WED_9AM_NY + timedelta(minutes=11))
    async with db.unit_of_work() as s:
        await visits.record_reconnect(s, patient, appointment_id=appt.id)
    freeze_clock(WED_9AM_NY + timedelta(minutes=25))
    with pytest.raises(Forbidden):
        async with db.unit_of_work() as s:
            await visits.end_visit(s, patient, appointment_id=appt.id)
    async with db.unit_of_work() as s:
        ended = await visits.end_visit(s, doctor, appointment_id=appt.id)
    assert ended.status == AppointmentStatus.COMPLETED
    assert ended.modality == Modality.AUDIO
    async with db.unit_of_work() as s:
        events = await visits.timeline(s, doctor, appointment_id=appt.id)
        audited = (
            (await s.execute(select(AuditEntry.detail).where(AuditEntry.resource_type == "Encounter")))
            .scalars()
            .all()
        )
    assert [str(e.kind) for e in events] == [
        "checked_in",
        "entered_waiting_room",
        "admitted",
        "connected",
        "connected",
        "modality_changed",
        "disconnected",
        "reconnected",
        "ended",
    ]
    switch = events[5]
    assert (switch.from_modality, switch.to_modality, switch.reason) == (
        "video",
        "audio",
        "connection_quality",
    )
    assert switch.at == WED_9AM_NY + timedelta(minutes=8)
    logged = [d.get("event") for d in audited if d]
    for kind in ("checked_in", "admitted", "modality_changed", "ended"):
        assert kind in logged
    # An admitted (joined) visit is never a no-show.
    assert (await tasks.run_due(db, now=WED_9AM_NY + timedelta(hours=2))).noshows == 0


async def test_another_patient_or_an_unrelated_clinician_cannot_reach_the_visit(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await booked(db, clinic)
    stranger = await make_patient(db, clinic.org_id, with_login=True)
    other_doc = await make_doctor(db, clinic.org_id)
    for who in (stranger, other_doc):
        with pytest.raises(AppointmentNotFound):
            async with db.unit_of_work() as s:
                await visits.can_join(s, principal_of(who), appointment_id=appt.id)  # type: ignore[arg-type]
    # The coordinator sees the visit's state but cannot join it.
    async with db.unit_of_work() as s:
        decision = await visits.can_join(s, principal_of(clinic.coordinator), appointment_id=appt.id)
    assert decision.allowed is False
