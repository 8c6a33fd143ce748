"""A small RPM clinic: a physician and a nurse on the care team of an enrolled patient whose BP cuff, scale,
oximeter, glucometer and CGM post with one device key; another nurse outside the care team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.identity.models import Role
from tests.factories import (
    Account,
    add_to_care_team,
    enrol_rpm,
    make_device,
    make_device_key,
    make_org,
    make_patient,
    make_user,
)


@dataclass
class Clinic:
    org: int
    physician: Account
    nurse: Account
    outsider: Account
    patient: int
    other_patient: int
    key: str
    serials: dict[str, str]  # device type -> serial
    other_serial: str  # assigned to other_patient, not linked to the key


async def build_clinic(db: Database, *, programs: tuple[str, ...] = ("hypertension", "diabetes")) -> Clinic:
    org = await make_org(db)
    physician = await make_user(db, org, Role.PHYSICIAN)
    nurse = await make_user(db, org, Role.NURSE)
    outsider = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org)
    other = await make_patient(db, org)
    assert isinstance(patient, int)
    assert isinstance(other, int)
    assert physician.practitioner_id
    assert nurse.practitioner_id
    for prac in (physician.practitioner_id, nurse.practitioner_id):
        await add_to_care_team(db, patient_id=patient, practitioner_id=prac, org_id=org)
    await enrol_rpm(db, org, patient, physician.practitioner_id, programs=programs)
    serials: dict[str, str] = {}
    ids = []
    for kind in ("bp_cuff", "scale", "pulse_oximeter", "glucose_meter", "cgm", "thermometer"):
        device_id, serial = await make_device(db, org, patient_id=patient, device_type=kind)
        serials[kind] = serial
        ids.append(device_id)
    _, other_serial = await make_device(db, org, patient_id=other)
    key = await make_device_key(db, org, ids)
    return Clinic(org, physician, nurse, outsider, patient, other, key, serials, other_serial)


@pytest.fixture
async def clinic(db: Database) -> Clinic:
    return await build_clinic(db)


def at(minutes_ago: float) -> str:
    """An RFC 3339 time `minutes_ago` before now, with a -05:00 offset."""
    from datetime import timezone

    t: datetime = utc_now() - timedelta(minutes=minutes_ago)
    return t.astimezone(timezone(timedelta(hours=-5))).isoformat()


def bp(
    serial: str, sys_: float, dia: float, minutes_ago: float, reading_id: str | None = None
) -> dict[str, object]:
    item: dict[str, object] = {
        "device": serial,
        "measured_at": at(minutes_ago),
        "kind": "blood_pressure",
        "systolic": sys_,
        "diastolic": dia,
        "unit": "mm[Hg]",
    }
    if reading_id:
        item["reading_id"] = reading_id
    return item


def single(serial: str, kind: str, value: float, unit: str, minutes_ago: float) -> dict[str, object]:
    return {"device": serial, "measured_at": at(minutes_ago), "kind": kind, "value": value, "unit": unit}
