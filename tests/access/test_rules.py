"""The named policy predicates in access/rules.py, for every role."""

from __future__ import annotations

import pytest

from telecare.access import rules
from telecare.auth.principal import Principal
from telecare.identity.models import Role

CLINICAL = {Role.PHYSICIAN, Role.NURSE, Role.THERAPIST, Role.PHARMACIST}


def who(role: Role, *, patient_id: int | None = None, practitioner_id: int | None = None) -> Principal:
    return Principal(
        user_id=1, org_id=1, role=role, kind="session", patient_id=patient_id, practitioner_id=practitioner_id
    )


@pytest.mark.parametrize("role", list(Role))
def test_duties_belong_to_their_roles_only(role: Role) -> None:
    p = who(role)
    assert rules.manages_schedules(p) is (role in {Role.COORDINATOR, Role.ADMIN})
    assert rules.assigns_visits(p) is (role is Role.COORDINATOR)
    assert rules.reviews_billing(p) is (role is Role.COORDINATOR)
    assert rules.logs_interpretation(p) is (role is Role.PHYSICIAN)


@pytest.mark.parametrize("role", list(Role))
def test_visit_clinician_is_the_booked_clinician_only(role: Role) -> None:
    assert rules.is_visit_clinician(who(role, practitioner_id=7), practitioner_id=7) is (role in CLINICAL)
    assert rules.is_visit_clinician(who(role, practitioner_id=7), practitioner_id=8) is False
    assert rules.is_visit_clinician(who(role), practitioner_id=None) is False


@pytest.mark.parametrize("role", list(Role))
def test_the_patient_is_the_record_owner_only(role: Role) -> None:
    assert rules.is_the_patient(who(role, patient_id=3), patient_id=3) is (role is Role.PATIENT)
    assert rules.is_the_patient(who(role, patient_id=3), patient_id=4) is False
    assert rules.is_the_patient(who(role), patient_id=None) is False


@pytest.mark.parametrize("role", list(Role))
def test_role_predicates_name_one_role_each(role: Role) -> None:
    p = who(role)
    assert rules.is_patient(p) is (role is Role.PATIENT)
    assert rules.is_coordinator(p) is (role is Role.COORDINATOR)
    assert rules.has_clinical_role(p) is (role in CLINICAL)
    assert rules.edits_identity(p) is (role is not Role.PATIENT)
    assert rules.may_grant_role(p, role)  # a role always covers itself
    assert rules.may_grant_role(p, Role.ADMIN) is (role in (Role.ADMIN,))


def test_only_the_system_principal_is_the_system_and_it_may_create_any_role() -> None:
    from telecare.auth.principal import system_principal

    operator = system_principal(1)
    assert rules.is_system(operator)
    assert all(rules.may_grant_role(operator, r) for r in Role)
    assert not any(rules.is_system(who(r)) for r in Role)
    assert operator.actor().kind == "system"
    assert operator.actor().user_id is None
