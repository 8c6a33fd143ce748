"""Every SELECT on appointments. Patient data is reached through `access.service.patient_scope`."""

from __future__ import annotations

from sqlalchemy import Select, select

from telecare.auth.principal import Principal
from telecare.identity.models import Practitioner
from telecare.scheduling.models import Appointment, AppointmentStatus


def visit_patients(principal: Principal) -> Select[int]:
    """A clinician reaches the patients they have a (non-cancelled) visit with."""
    return (
        select(Appointment.patient_id)
        .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
        .where(
            Practitioner.user_id == principal.user_id,
            Appointment.org_id == principal.org_id,
            Appointment.status != AppointmentStatus.CANCELLED,
        )
    )
