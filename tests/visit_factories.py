"""Factories for the visits tests (scheduling, visits, billing). Each opens its own unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

import httpx

from telecare.auth.principal import Principal
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Practitioner, Role
from telecare.scheduling.models import (
    POLICY_DEFAULTS,
    Appointment,
    AvailabilityTemplate,
    Modality,
    PatientKind,
    SchedulingPolicy,
    VisitType,
)
from telecare.visits.models import ConsentText
from tests.factories import Account, add_license, login_post, make_org, make_patient, make_user

# Tuesday 1 December 2026, 12:00 UTC (07:00 in New York). Visits are booked on Wednesday 2 December.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WED_9AM_NY = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)


def principal_of(account: Account) -> Principal:
    return Principal(
        user_id=account.user_id,
        org_id=account.org_id,
        role=account.role,
        kind="session",
        mfa_verified=True,
        patient_id=account.patient_id,
        practitioner_id=account.practitioner_id,
        email=account.email,
    )


@dataclass
class Clinic:
    org_id: int
    coordinator: Account
    doctor: Account
    patient: Account
    visit_type_id: int
    new_visit_type_id: int
    consent_id: int


async def add_weekly(
    db: Database, *, practitioner_id: int, org_id: int, weekday: int, start: time, end: time
) -> None:
    async with db.unit_of_work() as s:
        s.add(
            AvailabilityTemplate(
                org_id=org_id,
                practitioner_id=practitioner_id,
                weekday=weekday,
                start_time=start,
                end_time=end,
            )
        )


async def make_doctor(
    db: Database, org_id: int, *, states: tuple[str, ...] = ("PA",), tz: str = "America/New_York"
) -> Account:
    doc = await make_user(db, org_id, Role.PHYSICIAN)
    assert doc.practitioner_id is not None
    async with db.unit_of_work() as s:
        prac = await s.get(Practitioner, doc.practitioner_id)
        assert prac is not None
        prac.timezone = tz
    for state in states:
        await add_license(db, practitioner_id=doc.practitioner_id, org_id=org_id, state=state)
    for weekday in range(7):
        await add_weekly(
            db,
            practitioner_id=doc.practitioner_id,
            org_id=org_id,
            weekday=weekday,
            start=time(9),
            end=time(12),
        )
    return doc


async def make_clinic(
    db: Database, *, patient_state: str = "PA", doctor_states: tuple[str, ...] = ("PA",)
) -> Clinic:
    org_id = await make_org(db)
    coordinator = await make_user(db, org_id, Role.COORDINATOR)
    doctor = await make_doctor(db, org_id, states=doctor_states)
    patient = await make_patient(db, org_id, state=patient_state, with_login=True)
    assert isinstance(patient, Account)
    async with db.unit_of_work() as s:
        s.add(SchedulingPolicy(org_id=org_id, **POLICY_DEFAULTS))
        vt = VisitType(
            org_id=org_id,
            name="Follow-up",
            duration_minutes=30,
            modalities=[Modality.VIDEO, Modality.AUDIO],
            patient_kind=PatientKind.ESTABLISHED,
        )
        new_vt = VisitType(
            org_id=org_id,
            name="New patient",
            duration_minutes=60,
            modalities=[Modality.VIDEO, Modality.AUDIO, Modality.IN_PERSON],
            patient_kind=PatientKind.NEW,
        )
        consent = ConsentText(
            org_id=org_id,
            version=1,
            title="Telehealth consent",
            body="I agree to receive care by video or telephone. I understand the limits of a remote exam.",
        )
        s.add_all([vt, new_vt, consent])
        await s.flush()
        return Clinic(org_id, coordinator, doctor, patient, vt.id, new_vt.id, consent.id)


async def login(client: httpx.AsyncClient, account: Account) -> str:
    """`tests.factories.web_login` for a frozen clock: the TOTP code is computed at `utc_now()`, the time the
    server checks it against. Returns the CSRF token."""
    import re

    import pyotp

    r = await login_post(client, {"email": account.email, "password": account.password})
    assert r.status_code == 303, r.text
    if account.role is not Role.PATIENT:
        assert account.totp_secret is not None
        page = await client.get(r.headers["location"])
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf, page.text
        code = pyotp.TOTP(account.totp_secret).at(utc_now())
        r = await client.post(r.headers["location"], data={"code": code, "csrf_token": csrf.group(1)})
        assert r.status_code == 303, r.text
    home = await client.get("/home")
    assert home.status_code == 200, home.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', home.text)
    assert token
    return token.group(1)


async def book_visit(
    db: Database,
    clinic: Clinic,
    *,
    start: datetime = WED_9AM_NY,
    modality: Modality = Modality.VIDEO,
    visit_type_id: int | None = None,
) -> Appointment:
    """The patient books a visit (default: the follow-up type) with the clinic's doctor (PA), at the current
    clock."""
    from telecare.scheduling import service

    async with db.unit_of_work() as s:
        return await service.book_appointment(
            s,
            principal_of(clinic.patient),
            practitioner_id=clinic.doctor.practitioner_id or 0,
            visit_type_id=visit_type_id or clinic.visit_type_id,
            start_at=start,
            modality=modality,
            expected_state="PA",
        )
