"""Documentation and billing after a visit: required telehealth elements, signing locks, addenda, derived
billing lines, coordinator adjustments, the patient's summary and survey."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from telecare.billing import service as billing
from telecare.billing.models import BillingAdjustment, BillingLineStatus
from telecare.core.db import Database
from telecare.core.errors import Forbidden, ValidationFailed
from telecare.core.time import freeze_clock
from telecare.scheduling.models import Appointment, Modality
from telecare.visits import notes
from telecare.visits import service as visits
from telecare.visits.models import LocationType, ModalityChangeReason
from telecare.visits.schemas import CheckIn, NoteUpdate
from tests.visit_factories import WED_9AM_NY, Clinic, book_visit, make_clinic, principal_of

COMPLETE = NoteUpdate(
    provider_location_type="site",
    provider_city="Philadelphia",
    provider_state="PA",
    identity_verified=True,
    identity_method="photo ID shown on camera",
    history="Follow-up of hypertension; home readings 130s/80s.",
    exam="Well appearing, speaking full sentences.",
    exam_limitations="No auscultation or palpation possible remotely.",
    assessment="Hypertension, controlled.",
    plan="Continue lisinopril 10 mg; labs in 3 months.",
    in_person_followup="In-person visit in 6 months for exam.",
    total_minutes=25,
    patient_summary="Your blood pressure is well controlled. Keep taking your medicine.",
)


async def run_visit(
    db: Database,
    clinic: Clinic,
    *,
    location: LocationType = LocationType.HOME,
    switch_at: int | None = None,
    length: int = 20,
    modality: Modality = Modality.VIDEO,
    start: datetime = WED_9AM_NY,
    visit_type_id: int | None = None,
) -> Appointment:
    freeze_clock(start - timedelta(days=1))
    appt = await book_visit(db, clinic, modality=modality, start=start, visit_type_id=visit_type_id)
    patient, doctor = principal_of(clinic.patient), principal_of(clinic.doctor)
    freeze_clock(start - timedelta(minutes=5))
    async with db.unit_of_work() as s:
        await visits.check_in(
            s,
            patient,
            appointment_id=appt.id,
            data=CheckIn(
                location_type=location,
                address_line="1 Main St",
                city="Erie",
                state="PA",
                consent_text_id=clinic.consent_id,
                consent_accepted=True,
            ),
        )
    freeze_clock(start)
    async with db.unit_of_work() as s:
        await visits.admit(s, doctor, appointment_id=appt.id)
        await visits.mark_connected(s, doctor, appointment_id=appt.id)
    if switch_at is not None:
        freeze_clock(start + timedelta(minutes=switch_at))
        async with db.unit_of_work() as s:
            await visits.switch_modality(
                s,
                doctor,
                appointment_id=appt.id,
                to_modality=Modality.AUDIO,
                reason=ModalityChangeReason.PATIENT_DECLINED_VIDEO,
            )
    freeze_clock(start + timedelta(minutes=length))
    async with db.unit_of_work() as s:
        return await visits.end_visit(s, doctor, appointment_id=appt.id)


async def test_a_note_cannot_be_signed_while_an_element_is_missing_and_names_each_one(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    doctor = principal_of(clinic.doctor)
    async with db.unit_of_work() as s:
        await notes.update_note(
            s, doctor, appointment_id=appt.id, data=NoteUpdate(history="Cough for a week.")
        )
    with pytest.raises(ValidationFailed) as missing:
        async with db.unit_of_work() as s:
            await notes.sign_note(s, doctor, appointment_id=appt.id)
    fields = {e.field for e in missing.value.errors}
    assert fields == {
        "provider_location_type",
        "provider_state",
        "provider_city",
        "identity_verified",
        "identity_method",
        "exam",
        "exam_limitations",
        "assessment",
        "plan",
        "in_person_followup",
        "total_minutes",
    }
    assert "history" not in fields  # filled in
    assert "patient_location" not in fields  # recorded at check-in


async def test_signing_locks_the_note_proposes_billing_and_later_changes_are_addenda(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic, location=LocationType.HOME)
    doctor = principal_of(clinic.doctor)
    async with db.unit_of_work() as s:
        await notes.update_note(s, doctor, appointment_id=appt.id, data=COMPLETE)
        note = await notes.sign_note(s, doctor, appointment_id=appt.id)
    assert note.status == "signed"
    facts = note.signed_facts or {}
    assert facts["patient_location"]["state"] == "PA"  # type: ignore[index]
    assert facts["consent"]["version"] == 1  # type: ignore[index]
    assert [p["role"] for p in facts["participants"]] == ["patient", "practitioner"]  # type: ignore[union-attr, index]
    with pytest.raises(notes.NoteLocked):
        async with db.unit_of_work() as s:
            await notes.update_note(s, doctor, appointment_id=appt.id, data=NoteUpdate(plan="changed"))
    async with db.unit_of_work() as s:
        await notes.add_addendum(s, doctor, appointment_id=appt.id, text="Lab order sent.")
        lines = await billing.lines_for_visit(s, doctor, appointment_id=appt.id)
        kept = await notes.open_note(s, doctor, appointment_id=appt.id)
        added = await notes.addenda(s, kept.id)
    assert kept.plan == COMPLETE.plan
    assert [a.text for a, _ in added] == ["Lab order sent."]
    assert [(x.cpt_code, x.place_of_service, x.modifiers) for x in lines] == [("99213", "10", ["95"])]


async def test_switch_to_audio_for_most_of_the_visit_bills_93_at_pos_02_and_needs_the_audio_conditions(
    db: Database,
) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic, location=LocationType.OTHER, switch_at=5, length=20)
    doctor = principal_of(clinic.doctor)
    async with db.unit_of_work() as s:
        await notes.update_note(s, doctor, appointment_id=appt.id, data=COMPLETE)
    with pytest.raises(ValidationFailed) as missing:
        async with db.unit_of_work() as s:
            await notes.sign_note(s, doctor, appointment_id=appt.id)
    assert {e.field for e in missing.value.errors} == {"practitioner_video_capable"}
    async with db.unit_of_work() as s:
        await notes.update_note(
            s,
            doctor,
            appointment_id=appt.id,
            data=NoteUpdate(practitioner_video_capable=True, total_minutes=30),
        )
        await notes.sign_note(s, doctor, appointment_id=appt.id)
        (line,) = await billing.lines_for_visit(s, doctor, appointment_id=appt.id)
    assert (line.cpt_code, line.place_of_service, line.modifiers) == ("99214", "02", ["93"])
    assert line.facts["video_minutes"] == 5
    assert line.facts["audio_minutes"] == 15
    assert line.facts["audio_only_reason"] == "patient_declined_video"


async def test_coordinator_adjusts_billing_with_a_reason_but_never_reads_the_note(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    doctor, coordinator = principal_of(clinic.doctor), principal_of(clinic.coordinator)
    async with db.unit_of_work() as s:
        await notes.update_note(s, doctor, appointment_id=appt.id, data=COMPLETE)
        await notes.sign_note(s, doctor, appointment_id=appt.id)
    with pytest.raises(Forbidden):
        async with db.unit_of_work() as s:
            await notes.open_note(s, coordinator, appointment_id=appt.id)
    async with db.unit_of_work() as s:
        (line,) = await billing.lines_for_review(s, coordinator)
    with pytest.raises(ValidationFailed) as bad:
        async with db.unit_of_work() as s:
            await billing.adjust_line(
                s, coordinator, line_id=line.id, change=billing.Adjustment(cpt_code="99999"), reason=""
            )
    assert {e.field for e in bad.value.errors} == {"reason", "cpt_code"}
    async with db.unit_of_work() as s:
        changed = await billing.adjust_line(
            s,
            coordinator,
            line_id=line.id,
            change=billing.Adjustment(cpt_code="99214", status=BillingLineStatus.APPROVED),
            reason="Clinician documented 32 minutes including chart review the same day",
        )
    assert changed.cpt_code == "99214"
    async with db.unit_of_work() as s:
        trail = (await s.execute(select(BillingAdjustment).order_by(BillingAdjustment.id))).scalars().all()
    assert [(t.field, t.old_value, t.new_value) for t in trail] == [
        ("cpt_code", "99213", "99214"),
        ("status", "proposed", "approved"),
    ]
    assert all(
        t.user_id == clinic.coordinator.user_id and t.reason.startswith("Clinician documented") for t in trail
    )
    with pytest.raises(billing.BillingLineClosed):
        async with db.unit_of_work() as s:
            await billing.adjust_line(
                s,
                coordinator,
                line_id=line.id,
                change=billing.Adjustment(cpt_code="99215"),
                reason="again please",
            )


async def test_patient_sees_the_summary_of_the_signed_note_and_answers_the_survey_once(db: Database) -> None:
    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    patient, doctor = principal_of(clinic.patient), principal_of(clinic.doctor)
    async with db.unit_of_work() as s:
        before = await notes.visit_summary(s, patient, appointment_id=appt.id)
    assert before.plan is None  # draft notes are not shown
    async with db.unit_of_work() as s:
        await notes.update_note(s, doctor, appointment_id=appt.id, data=COMPLETE)
        await notes.sign_note(s, doctor, appointment_id=appt.id)
    async with db.unit_of_work() as s:
        summary = await notes.visit_summary(s, patient, appointment_id=appt.id)
        await notes.submit_survey(
            s, patient, appointment_id=appt.id, rating=5, would_recommend=True, comment="Easy."
        )
    assert summary.plan == COMPLETE.plan
    assert summary.in_person_followup == COMPLETE.in_person_followup
    with pytest.raises(notes.SurveyNotAvailable):
        async with db.unit_of_work() as s:
            await notes.submit_survey(
                s, patient, appointment_id=appt.id, rating=1, would_recommend=False, comment=None
            )
    async with db.unit_of_work() as s:
        stats = await notes.survey_stats(s, principal_of(clinic.coordinator))
    assert (stats.responses, stats.mean_rating, stats.would_recommend_share) == (1, 5.0, 1.0)


async def test_a_new_patient_visit_bills_new_codes_until_the_patient_has_been_seen(db: Database) -> None:
    clinic = await make_clinic(db)
    doctor = principal_of(clinic.doctor)
    codes = []
    for start in (WED_9AM_NY, WED_9AM_NY + timedelta(days=1)):
        appt = await run_visit(db, clinic, start=start, visit_type_id=clinic.new_visit_type_id, length=45)
        async with db.unit_of_work() as s:
            await notes.update_note(s, doctor, appointment_id=appt.id, data=COMPLETE)
            await notes.sign_note(s, doctor, appointment_id=appt.id)
            (line,) = await billing.lines_for_visit(s, doctor, appointment_id=appt.id)
        codes.append((line.cpt_code, line.facts["patient_kind"]))
    # 25 minutes: new patient 99202 (>= 15), then established 99213 (>= 20) once seen the day before.
    assert codes == [("99202", "new"), ("99213", "established")]
