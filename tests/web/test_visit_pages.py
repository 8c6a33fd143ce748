"""The visit pages through the real web stack (cookie session, CSRF, TOTP for staff): booking, check-in with
the licensure gate, the coordinator calendar and coverage, the clinician's note and sign, billing review and
the patient's summary and survey."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from telecare.core.db import Database
from telecare.core.time import freeze_clock
from telecare.scheduling.models import AppointmentStatus
from telecare.visits import service as visits
from tests.factories import add_license
from tests.visit_factories import NOW, WED_9AM_NY, login, make_clinic, make_doctor, principal_of


def forms(html: str, action: str) -> list[dict[str, str]]:
    out = []
    for m in re.finditer(r'<form method="post" action="' + re.escape(action) + r'">(.*?)</form>', html, re.S):
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', m.group(1)))
        out.append(fields)
    return out


async def test_patient_books_checks_in_from_another_state_and_the_coordinator_sees_the_flag(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    colleague = await make_doctor(db, clinic.org_id, states=("NJ",))
    freeze_clock(NOW)
    await login(client, clinic.patient)
    page = await client.get(f"/visits/book?visit_type_id={clinic.visit_type_id}&state=PA&day=2026-12-02")
    assert page.status_code == 200
    slots = forms(page.text, "/visits/book")
    assert slots, page.text
    first = slots[0]
    assert first["start_at"] == WED_9AM_NY.isoformat()
    r = await client.post("/visits/book", data={**first, "modality": "video"})
    assert r.status_code == 303
    detail = await client.get(r.headers["location"])
    assert "Your visit is booked" in detail.text
    assert "Check-in opens at" in detail.text
    appt_id = int(r.headers["location"].split("/")[2].split("?")[0])

    freeze_clock(WED_9AM_NY - timedelta(minutes=10))
    csrf = await login(client, clinic.patient)
    form = await client.get(f"/visits/{appt_id}/check-in")
    assert "Telehealth consent (version 1)" in form.text
    consent_id = re.search(r'name="consent_text_id" value="(\d+)"', form.text)
    assert consent_id
    base = {
        "csrf_token": csrf,
        "location_type": "home",
        "address_line": "9 Shore Rd",
        "city": "Cape May",
        "state": "NJ",
        "consent_text_id": consent_id.group(1),
    }
    refused = await client.post(f"/visits/{appt_id}/check-in", data=base)
    assert refused.status_code == 422
    assert "The telehealth consent must be accepted." in refused.text
    blocked = await client.post(f"/visits/{appt_id}/check-in", data={**base, "consent_accepted": "yes"})
    assert blocked.status_code == 409
    assert "This visit cannot go ahead as booked" in blocked.text
    assert "not licensed to treat you while you are in NJ" in blocked.text

    coordinator = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")  # type: ignore[attr-defined]
    async with coordinator:
        await login(coordinator, clinic.coordinator)
        cal = await coordinator.get("/schedule/calendar?day=2026-12-02")
        assert "Flagged for re-assignment (licensure)" in cal.text
        assert f'<option value="{colleague.practitioner_id}">' in cal.text
        ccsrf = re.search(r'name="csrf_token" value="([^"]+)"', cal.text)
        assert ccsrf
        moved = await coordinator.post(
            f"/schedule/visits/{appt_id}/reassign",
            data={"csrf_token": ccsrf.group(1), "practitioner_id": str(colleague.practitioner_id)},
        )
        assert moved.status_code == 303
        cal = await coordinator.get("/schedule/calendar?day=2026-12-02")
        assert "Flagged for re-assignment" not in cal.text
    ok = await client.post(f"/visits/{appt_id}/check-in", data={**base, "consent_accepted": "yes"})
    assert ok.status_code == 303
    detail = await client.get(f"/visits/{appt_id}")
    assert "Go to the waiting room" in detail.text


async def test_note_sign_billing_review_summary_and_survey_through_the_pages(
    client: httpx.AsyncClient, db: Database
) -> None:
    from tests.visits.test_notes_billing import run_visit

    clinic = await make_clinic(db)
    appt = await run_visit(db, clinic)
    freeze_clock(WED_9AM_NY + timedelta(minutes=30))
    csrf = await login(client, clinic.doctor)
    page = await client.get(f"/visits/{appt.id}/note")
    assert "Scranton" not in page.text  # run_visit attests Erie
    assert "1 Main St, Erie, PA (home)" in page.text
    assert "version 1" in page.text
    draft = {"csrf_token": csrf, "history": "Cough.", "action": "sign"}
    r = await client.post(f"/visits/{appt.id}/note", data=draft)
    assert r.status_code == 422
    assert "State the limitations of the remote exam." in r.text
    complete = {
        **draft,
        "provider_location_type": "site",
        "provider_city": "Pittsburgh",
        "provider_state": "PA",
        "identity_verified": "yes",
        "identity_method": "ID on camera",
        "exam": "Alert.",
        "exam_limitations": "No auscultation.",
        "assessment": "Viral bronchitis.",
        "plan": "Fluids and rest; return if fever.",
        "in_person_followup": "Only if worse.",
        "patient_summary": "Likely a virus. Rest and drink fluids.",
        "total_minutes": "22",
    }
    r = await client.post(f"/visits/{appt.id}/note", data=complete)
    assert r.status_code == 303
    page = await client.get(f"/visits/{appt.id}/note")
    assert '<strong id="note-status">signed</strong>' in page.text
    assert "99213-95, POS 10" in page.text

    coordinator = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")  # type: ignore[attr-defined]
    async with coordinator:
        ccsrf = await login(coordinator, clinic.coordinator)
        review = await coordinator.get("/billing/review")
        assert "<strong>99213</strong>-95 · POS 10 · proposed" in review.text
        assert "Viral bronchitis" not in review.text
        note = await coordinator.get(f"/visits/{appt.id}/note")
        assert note.status_code == 403
        assert "Viral bronchitis" not in note.text
        line_id = re.search(r'action="/billing/review/(\d+)"', review.text)
        assert line_id
        bad = await coordinator.post(
            f"/billing/review/{line_id.group(1)}",
            data={"csrf_token": ccsrf, "cpt_code": "99214", "reason": ""},
        )
        assert bad.status_code == 422
        assert "Give the reason for the change" in bad.text
        good = await coordinator.post(
            f"/billing/review/{line_id.group(1)}",
            data={
                "csrf_token": ccsrf,
                "cpt_code": "99214",
                "reason": "Prep time documented",
                "decision": "approve",
            },
        )
        assert good.status_code == 303
        approved = await coordinator.get("/billing/review?status=approved")
        assert "cpt_code 99213 → 99214 — “Prep time documented”" in approved.text

    pcsrf = await login(client, clinic.patient)
    detail = await client.get(f"/visits/{appt.id}")
    assert "Likely a virus. Rest and drink fluids." in detail.text
    assert "Fluids and rest; return if fever." in detail.text
    r = await client.post(
        f"/visits/{appt.id}/survey",
        data={"csrf_token": pcsrf, "rating": "4", "would_recommend": "yes", "comment": "Quick"},
    )
    assert r.status_code == 303
    detail = await client.get(f"/visits/{appt.id}")
    assert "Thank you for your feedback." in detail.text


async def test_coverage_page_lists_states_and_licences_expiring_within_sixty_days(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    assert clinic.doctor.practitioner_id
    freeze_clock(NOW)
    today = NOW.date()
    await add_license(
        db,
        practitioner_id=clinic.doctor.practitioner_id,
        org_id=clinic.org_id,
        state="OH",
        expires_on=today + timedelta(days=59),
    )
    await add_license(
        db,
        practitioner_id=clinic.doctor.practitioner_id,
        org_id=clinic.org_id,
        state="NY",
        expires_on=today + timedelta(days=61),
    )
    await add_license(
        db,
        practitioner_id=clinic.doctor.practitioner_id,
        org_id=clinic.org_id,
        state="DE",
        issued_on=today + timedelta(days=1),
    )
    await login(client, clinic.coordinator)
    page = await client.get("/schedule/coverage")
    assert page.status_code == 200
    row = re.search(r"<tr><td>Physician[^<]*, MD</td>(.*?)</tr>", page.text, re.S)
    assert row, page.text
    for state in ("NY", "OH", "PA"):
        assert state in row.group(1)
    assert "DE" not in row.group(1)  # starts tomorrow
    assert f"licence OH expires {(today + timedelta(days=59)).isoformat()} (59 days)" in row.group(1)
    assert "licence NY expires" not in row.group(1)


async def test_patient_state_machine_via_service_then_pages_show_progress(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A visit blocked at check-in shows the explanation on its page and no waiting-room link."""
    clinic = await make_clinic(db, doctor_states=("PA",))
    from tests.visits.test_visit_flow import attest, booked

    appt = await booked(db, clinic)
    freeze_clock(WED_9AM_NY - timedelta(minutes=5))
    async with db.unit_of_work() as s:
        outcome = await visits.check_in(
            s, principal_of(clinic.patient), appointment_id=appt.id, data=attest(clinic, "DE")
        )
    assert outcome.appointment.status == AppointmentStatus.BOOKED
    await login(client, clinic.patient)
    detail = await client.get(f"/visits/{appt.id}")
    assert "not licensed to treat you while you are in DE" in detail.text
    assert "Go to the waiting room" not in detail.text


async def test_coordinator_books_for_a_patient_from_the_chart(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic = await make_clinic(db)
    freeze_clock(NOW)
    await login(client, clinic.coordinator)
    chart = await client.get(f"/patients/{clinic.patient.patient_id}")
    link = f"/visits/book?patient_id={clinic.patient.patient_id}"
    assert link in chart.text
    page = await client.get(f"{link}&visit_type_id={clinic.visit_type_id}&state=PA&day=2026-12-02")
    assert "Book a visit for Given" in page.text
    slot = forms(page.text, "/visits/book")[2]
    assert slot["patient_id"] == str(clinic.patient.patient_id)
    r = await client.post("/visits/book", data={**slot, "modality": "audio"})
    assert r.status_code == 303
    calendar = await client.get(r.headers["location"])
    assert "Visit booked." in calendar.text
    assert "09:30–10:00" in calendar.text
