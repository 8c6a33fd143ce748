"""Named policy predicates: the access rules that depend on who the caller is in one record (the visit's own
clinician, the patient themselves) or on a duty only some roles hold, beside the `POLICY` table that says
which role may do what on which resource.

Services ask these instead of comparing roles in `if` statements, so every rule of this kind is in
`access/`, has a name, and is tested once (tests/access/test_rules.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from telecare.access.policy import role_covers
from telecare.identity.models import Role

if TYPE_CHECKING:
    from telecare.auth.principal import Principal

# Duties held by roles (operational, not clinical reach: the POLICY table still decides the reach).
SCHEDULE_MANAGERS = frozenset({Role.COORDINATOR, Role.ADMIN})  # visit types, scheduling rules
VISIT_ASSIGNERS = frozenset({Role.COORDINATOR})  # re-assign a visit to a licensed colleague
BILLING_REVIEWERS = frozenset({Role.COORDINATOR})  # adjust, approve or void E/M lines
# 99091 (collection and interpretation of physiologic data) is a physician or other qualified health care
# professional service (docs/rpm.md); Telecare lets physicians log it.
INTERPRETERS = frozenset({Role.PHYSICIAN})


def manages_schedules(principal: Principal) -> bool:
    return principal.role in SCHEDULE_MANAGERS


def assigns_visits(principal: Principal) -> bool:
    return principal.role in VISIT_ASSIGNERS


def reviews_billing(principal: Principal) -> bool:
    return principal.role in BILLING_REVIEWERS


def logs_interpretation(principal: Principal) -> bool:
    return principal.role in INTERPRETERS


def is_patient(principal: Principal) -> bool:
    """The caller is a patient (their own portal)."""
    return principal.role is Role.PATIENT


def is_coordinator(principal: Principal) -> bool:
    """The caller coordinates the organization's schedules and contacts (no clinical reach)."""
    return principal.role is Role.COORDINATOR


def has_clinical_role(principal: Principal) -> bool:
    """The caller's role is a clinical one (physician, nurse, therapist, pharmacist)."""
    return principal.role.is_clinician


def is_clinician(principal: Principal) -> bool:
    """A clinical role with a practitioner record (physician, nurse, therapist, pharmacist)."""
    return principal.role.is_clinician and principal.practitioner_id is not None


def is_visit_clinician(principal: Principal, *, practitioner_id: int | None) -> bool:
    """The caller is the clinician the visit is booked with."""
    return (
        principal.role.is_clinician
        and practitioner_id is not None
        and principal.practitioner_id == practitioner_id
    )


def is_the_patient(principal: Principal, *, patient_id: int | None) -> bool:
    """The caller is the patient the record belongs to."""
    return principal.role is Role.PATIENT and patient_id is not None and principal.patient_id == patient_id


def is_system(principal: Principal) -> bool:
    """The operator's own tools (the `telecare` CLI, scheduled tasks): trusted with the shell and the
    database already, named and audited as the system actor."""
    return principal.kind == "system"


def may_grant_role(principal: Principal, role: Role) -> bool:
    """A credential or account may only be handed out by someone whose own grants cover the role's: an admin
    who chooses a physician's password (or holds a clinician's token) would read clinical data through it
    (minimum necessary; docs/security.md). Operators create clinical accounts with `telecare users create`."""
    return is_system(principal) or role_covers(principal.role, role)


# Fields that identify the patient (matching records, claims, prescriptions): changed by staff at
# registration, never by the patient through the contact form or API (docs/security.md).
IDENTITY_FIELDS = frozenset({"given_name", "family_name", "birth_date", "mrn", "sex"})


def edits_identity(principal: Principal) -> bool:
    """The caller may change a patient's identity fields (staff with update reach, not the patient)."""
    return principal.role is not Role.PATIENT
