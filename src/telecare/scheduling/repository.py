"""Every SELECT on appointments. Patient data is reached through `access.service.patient_scope`."""

from __future__ import annotations

from sqlalchemy import Select, select

from telecare.access.service import ReachOf
from telecare.identity.models import Practitioner
from telecare.scheduling.models import Appointment, AppointmentStatus


def visit_patients(reach: ReachOf) -> Select[int]:
    """A clinician reaches the patients they have a (non-cancelled) visit with (a care relationship:
    `reach`'s ids may be bind parameters)."""
    return (
        select(Appointment.patient_id)
        .join(Practitioner, Practitioner.id == Appointment.practitioner_id)
        .where(
            Practitioner.user_id == reach.user_id,
            Appointment.org_id == reach.org_id,
            Appointment.status != AppointmentStatus.CANCELLED,
        )
    )
