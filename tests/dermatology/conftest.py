"""A small practice for the dermatology tests: a dermatology queue with one dermatologist, a physician who is
not in it (a dermatologist outside the queue), the patient's primary-care physician (on the care team, not
a dermatologist), a nurse with no relationship, and two patients with logins. Bearer headers for each."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from telecare.core.db import Database
from telecare.dermatology.service import SPECIALTY
from telecare.econsult.models import ConsultQueue, ConsultQueueMember
from telecare.identity.models import Role
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    make_org,
    make_patient,
    make_user,
    setup_uow,
    token_for,
)


@dataclass
class Clinic:
    org: int
    dermatologist: Account
    outside_dermatologist: Account  # a physician, not a member of the dermatology queue
    pcp: Account  # on the patient's care team
    outsider: Account  # a nurse of the organization with no relationship
    patient: Account
    other_patient: Account
    h: dict[str, dict[str, str]]

    @property
    def patient_id(self) -> int:
        assert self.patient.patient_id is not None
        return self.patient.patient_id


async def build_clinic(db: Database) -> Clinic:
    org = await make_org(db)
    derm = await make_user(db, org, Role.PHYSICIAN)
    outside = await make_user(db, org, Role.PHYSICIAN)
    pcp = await make_user(db, org, Role.PHYSICIAN)
    outsider = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org, with_login=True)
    other = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert isinstance(other, Account)
    assert patient.patient_id is not None
    assert pcp.practitioner_id is not None
    await add_to_care_team(db, patient_id=patient.patient_id, practitioner_id=pcp.practitioner_id, org_id=org)
    async with setup_uow(db) as s:
        queue = ConsultQueue(org_id=org, specialty=SPECIALTY, name="Dermatology")
        cardiology = ConsultQueue(org_id=org, specialty="cardiology", name="Cardiology")
        s.add_all([queue, cardiology])
        await s.flush()
        s.add(ConsultQueueMember(org_id=org, queue_id=queue.id, user_id=derm.user_id))
        s.add(ConsultQueueMember(org_id=org, queue_id=cardiology.id, user_id=outside.user_id))
    accounts = {
        "derm": derm,
        "outside_derm": outside,
        "pcp": pcp,
        "outsider": outsider,
        "patient": patient,
        "other_patient": other,
    }
    h = {k: bearer(await token_for(db, a)) for k, a in accounts.items()}
    return Clinic(org, derm, outside, pcp, outsider, patient, other, h)


@pytest.fixture
async def clinic(db: Database) -> Clinic:
    return await build_clinic(db)
