"""A small practice for the messaging tests: a primary-care inbox with a physician and a nurse as members, a
behavioural-health inbox, a patient with a login (and a second one), a clinician on the patient's care team
who is not in the inbox, and a clinician with no relationship at all. Tokens for each, for the REST API."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from telecare.core.db import Database
from telecare.identity.models import Organization, Role
from telecare.messaging.models import Inbox, InboxKind, InboxMember
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
class Practice:
    org: int
    primary: int  # inbox ids
    behavioral: int
    physician: Account
    nurse: Account
    care_team_only: Account  # on the patient's care team, not a member of any inbox
    outsider: Account  # same organization, no relationship
    patient: Account
    other_patient: Account
    headers: dict[str, dict[str, str]]  # by name: bearer headers


async def build_practice(db: Database) -> Practice:
    org = await make_org(db)
    async with setup_uow(db) as s:
        o = await s.get(Organization, org)
        assert o is not None
        o.timezone = "America/New_York"
        primary = Inbox(org_id=org, slug="primary", name="Primary care", kind=InboxKind.PRIMARY_CARE)
        behavioral = Inbox(
            org_id=org,
            slug="bh",
            name="Behavioral health",
            kind=InboxKind.BEHAVIORAL_HEALTH,
            response_business_days=1,
        )
        s.add_all([primary, behavioral])
        await s.flush()
        ids = primary.id, behavioral.id
    physician = await make_user(db, org, Role.PHYSICIAN)
    nurse = await make_user(db, org, Role.NURSE)
    care_team_only = await make_user(db, org, Role.PHYSICIAN)
    outsider = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org, with_login=True)
    other = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert isinstance(other, Account)
    assert patient.patient_id is not None
    assert care_team_only.practitioner_id is not None
    await add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=care_team_only.practitioner_id, org_id=org
    )
    async with setup_uow(db) as s:
        for acc in (physician, nurse):
            s.add(InboxMember(org_id=org, inbox_id=ids[0], user_id=acc.user_id))
    accounts = {
        "physician": physician,
        "nurse": nurse,
        "care_team_only": care_team_only,
        "outsider": outsider,
        "patient": patient,
        "other_patient": other,
    }
    headers = {name: bearer(await token_for(db, acc)) for name, acc in accounts.items()}
    return Practice(org, ids[0], ids[1], physician, nurse, care_team_only, outsider, patient, other, headers)


@pytest.fixture
async def practice(db: Database) -> Practice:
    return await build_practice(db)
