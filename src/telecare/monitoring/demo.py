"""RPM data for the demo organization: enrolments, devices and three weeks of synthetic readings (stored
through the same pipeline as real uploads, so the rules open alerts), plus logged time."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.audit import service as audit
from telecare.config import Settings
from telecare.core.time import utc_now
from telecare.identity.models import CareTeamMember, Organization, Patient, Practitioner, Role, User
from telecare.monitoring.codes import Kind
from telecare.monitoring.ingest import Candidate, normalise_serial, store
from telecare.monitoring.models import Device, DeviceAssignment, ReadingSource, RpmEnrolment, TimeEntry

EASTERN = timezone(timedelta(hours=-5))
# (patient index, programs, device types)
PLAN = [
    (0, ["hypertension", "diabetes"], ["bp_cuff", "cgm"]),
    (1, ["heart_failure"], ["scale", "bp_cuff"]),
    (2, ["copd"], ["pulse_oximeter"]),
    (3, ["diabetes"], ["glucose_meter"]),
    (4, ["hypertension"], ["bp_cuff"]),
    (5, ["heart_failure", "hypertension"], ["scale", "bp_cuff"]),
]


async def load(session: AsyncSession, settings: Settings, org_slug: str) -> int:
    """Returns the number of readings stored."""
    org = (await session.execute(select(Organization).where(Organization.slug == org_slug))).scalar_one()
    patients = list(
        (
            await session.execute(
                select(Patient).where(Patient.org_id == org.id).order_by(Patient.id).limit(6)
            )
        ).scalars()
    )
    rng = random.Random(4)
    now = utc_now()
    start = now - timedelta(days=21)
    candidates: list[Candidate] = []
    nurse_id = None
    for (index, programs, device_types), patient in zip(PLAN, patients, strict=False):
        physician = (
            await session.execute(
                select(Practitioner.id, User.id)
                .join(User, User.id == Practitioner.user_id)
                .join(CareTeamMember, CareTeamMember.practitioner_id == Practitioner.id)
                .where(CareTeamMember.patient_id == patient.id, User.role == str(Role.PHYSICIAN))
            )
        ).first()
        nurse = (
            await session.execute(
                select(User.id)
                .join(Practitioner, Practitioner.user_id == User.id)
                .join(CareTeamMember, CareTeamMember.practitioner_id == Practitioner.id)
                .where(CareTeamMember.patient_id == patient.id, User.role == str(Role.NURSE))
            )
        ).scalar()
        if physician is None:
            continue
        nurse_id = nurse or nurse_id
        enrolment = RpmEnrolment(
            org_id=org.id,
            patient_id=patient.id,
            ordering_practitioner_id=physician[0],
            programs=programs,
            consent_at=start,
            consent_method="verbal",
            started_on=start.date(),
        )
        session.add(enrolment)
        await session.flush()
        for dtype in device_types:
            serial = f"DEMO-{dtype.upper()}-{index:02d}"
            device = Device(
                org_id=org.id,
                device_type=dtype,
                manufacturer="Demo Devices",
                model=dtype.replace("_", " ").title(),
                serial=serial,
                serial_norm=normalise_serial(serial),
            )
            session.add(device)
            await session.flush()
            session.add(
                DeviceAssignment(org_id=org.id, device_id=device.id, patient_id=patient.id, started_at=start)
            )
            candidates += _readings(
                rng, org.id, patient.id, device.id, f"dev:{device.serial_norm}", dtype, index, start, now
            )
        if nurse is not None:
            for day, (kind, minutes) in enumerate([("call", 12), ("management", 9), ("video", 6)]):
                session.add(
                    TimeEntry(
                        org_id=org.id,
                        patient_id=patient.id,
                        enrolment_id=enrolment.id,
                        user_id=nurse,
                        kind=kind,
                        minutes=minutes + index,
                        performed_at=now - timedelta(days=day + 1),
                    )
                )
    for i, c in enumerate(candidates):
        c.index = i
    await store(
        session, candidates, actor=audit.SYSTEM_ACTOR, audit_key=settings.secret("audit_hmac_key").encode()
    )
    return len(candidates)


def _readings(
    rng: random.Random,
    org_id: int,
    patient_id: int,
    device_id: int,
    ident: str,
    dtype: str,
    index: int,
    start: datetime,
    now: datetime,
) -> list[Candidate]:
    out: list[Candidate] = []

    def add(kind: Kind, t: datetime, value: float, value2: float | None, unit: str) -> None:
        out.append(
            Candidate(
                0,
                org_id,
                patient_id,
                device_id,
                ident,
                ReadingSource.NATIVE,
                kind,
                value,
                value2,
                unit,
                value,
                value2,
                unit,
                t.astimezone(EASTERN),
                -300,
            )
        )

    days = (now - start).days
    for d in range(days):
        day = start + timedelta(days=d)
        if dtype == "bp_cuff":
            for hour in (7, 19):
                sys_ = 128 + rng.gauss(0, 8) + (8 if index == 4 else 0)
                add(
                    Kind.BLOOD_PRESSURE,
                    day + timedelta(hours=hour),
                    round(sys_),
                    round(sys_ * 0.62 + rng.gauss(0, 4)),
                    "mm[Hg]",
                )
        elif dtype == "scale":
            gain = 1.6 if (index == 1 and d == days - 1) else 0.0  # a heart-failure gain on the last day
            add(Kind.WEIGHT, day + timedelta(hours=7), round(88 + rng.gauss(0, 0.2) + gain, 1), None, "kg")
        elif dtype == "pulse_oximeter":
            add(Kind.SPO2, day + timedelta(hours=9), round(90 + rng.gauss(0, 1.5)), None, "%")
        elif dtype == "glucose_meter":
            for hour in (7, 12, 18):
                add(Kind.GLUCOSE, day + timedelta(hours=hour), round(140 + rng.gauss(0, 35)), None, "mg/dL")
        elif dtype == "cgm" and d < days - 2:
            for step in range(96):
                t = day + timedelta(minutes=15 * step)
                hour = (t.astimezone(EASTERN)).hour
                base = 130 + 45 * math.sin((hour - 6) / 24 * 2 * math.pi) + rng.gauss(0, 18)
                add(Kind.CGM, t, round(min(380, max(45, base))), None, "mg/dL")
    if dtype == "bp_cuff" and index == 0:
        add(Kind.BLOOD_PRESSURE, now - timedelta(hours=2), 186, 104, "mm[Hg]")
    return out
