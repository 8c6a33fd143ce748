"""The scheduling domain's errors (raised by availability.py and service.py)."""

from __future__ import annotations

from telecare.core.errors import Conflict, NotFound


class VisitTypeNotFound(NotFound):
    """No active visit type with that id in the caller's organization."""

    code = "visit_type_not_found"
    title = "Visit type not found"


class PractitionerNotFound(NotFound):
    """No practitioner with that id in the caller's organization."""

    code = "practitioner_not_found"
    title = "Practitioner not found"


class AppointmentNotFound(NotFound):
    """The appointment does not exist or is outside the caller's reach."""

    code = "appointment_not_found"
    title = "Appointment not found"


class SlotUnavailable(Conflict):
    """The requested time is not a free slot of the practitioner (taken, blocked, outside availability)."""

    code = "slot_unavailable"
    title = "That time is not available"


class NoticePeriodPassed(Conflict):
    """Patients cannot reschedule inside the organization's notice period."""

    code = "notice_period_passed"
    title = "Too late to change this appointment online"


class AppointmentNotChangeable(Conflict):
    """The appointment's status does not allow this change (e.g. already cancelled or completed)."""

    code = "appointment_not_changeable"
    title = "The appointment can no longer be changed"
