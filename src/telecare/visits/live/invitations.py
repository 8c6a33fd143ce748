"""Guests (interpreter, caregiver) join a visit by a one-time invitation link.

The link carries a random token; only its SHA-256 digest is stored (`VisitParticipant.invite_token_hash`).
Opening the link and pressing "Join" redeems it once: the invitation is marked used and the guest's browser
gets a signed guest cookie bound to that participant, valid until the invitation expires. A second use of
the link, an expired link, or a link for a visit that has ended is refused. At most four people take part in
a visit (patient, clinician and two guests)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules
from telecare.access.policy import Action, Resource
from telecare.access.service import record_access
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, AuditOutcome
from telecare.auth.dependencies import defer_independent_write
from telecare.auth.principal import Principal
from telecare.config import Settings
from telecare.core.crypto import constant_time_equal, hmac_sha256, new_token, token_digest
from telecare.core.errors import Conflict, FieldError, Forbidden, ValidationFailed
from telecare.core.time import utc_now
from telecare.scheduling.models import Appointment, AppointmentStatus
from telecare.scheduling.service import load_appointment
from telecare.visits.models import ParticipantRole, VisitParticipant

MAX_PARTICIPANTS = 4
GUEST_ROLES = (ParticipantRole.INTERPRETER, ParticipantRole.CAREGIVER)
# A visit may overrun its slot; the link stays usable for this long after the slot ends, and never after
# the clinician has ended the visit.
OVERRUN = timedelta(minutes=60)
GUEST_COOKIE = "tc_guest"
FINISHED = (AppointmentStatus.COMPLETED, AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW)


class InvitationInvalid(Forbidden):
    """The invitation link is unknown, already used, expired, or its visit has ended."""

    code = "invitation_invalid"
    title = "This invitation cannot be used"


class VisitFull(Conflict):
    """A visit has at most four participants."""

    code = "visit_full"
    title = "The visit is full"


@dataclass(frozen=True)
class Guest:
    """A redeemed invitation: who the guest is in the visit (no user account)."""

    participant_id: int
    appointment_id: int
    org_id: int
    patient_id: int
    role: ParticipantRole
    display_name: str
    expires_at: datetime
    client_addr: str | None = None

    def actor(self) -> audit.Actor:
        return audit.Actor(None, self.org_id, f"guest:{self.role}", "guest", self.client_addr)


def _expiry(appt: Appointment) -> datetime:
    return appt.end_at + OVERRUN


async def invite_guest(
    session: AsyncSession,
    principal: Principal,
    *,
    appointment_id: int,
    role: ParticipantRole,
    display_name: str,
) -> tuple[VisitParticipant, str]:
    """Create a guest participant and its one-time link token (returned once, stored only as a digest).
    The patient may invite a caregiver or an interpreter; the visit's clinician an interpreter."""
    appt = await load_appointment(
        session, principal, appointment_id, resource=Resource.VISIT, action=Action.UPDATE, lock=True
    )
    is_patient = rules.is_the_patient(principal, patient_id=appt.patient_id)
    is_clinician = rules.is_visit_clinician(principal, practitioner_id=appt.practitioner_id)
    if not (is_patient or is_clinician):
        raise Forbidden("Only the visit's patient or clinician can invite someone.")
    if role not in GUEST_ROLES:
        raise ValidationFailed(errors=[FieldError("role", "Invite an interpreter or a caregiver.")])
    if role is ParticipantRole.CAREGIVER and not is_patient:
        raise Forbidden("Only the patient invites a caregiver.")
    if appt.status in FINISHED:
        raise Conflict(f"The visit is {appt.status}.")
    now = utc_now()
    guests = await session.scalar(
        select(func.count())
        .select_from(VisitParticipant)
        .where(
            VisitParticipant.appointment_id == appt.id,
            VisitParticipant.role.in_([str(r) for r in GUEST_ROLES]),
            VisitParticipant.invite_expires_at > now,
        )
    )
    if (guests or 0) >= MAX_PARTICIPANTS - 2:  # the patient and the clinician are the other two
        raise VisitFull(f"A visit has at most {MAX_PARTICIPANTS} participants.")
    token = new_token()
    guest = VisitParticipant(
        appointment_id=appt.id,
        role=role,
        user_id=None,
        display_name=display_name.strip(),
        invite_token_hash=token_digest(token),
        invite_expires_at=_expiry(appt),
        invited_by_user_id=principal.user_id,
    )
    session.add(guest)
    await session.flush()
    await record_access(
        session,
        principal,
        resource=Resource.VISIT,
        action=Action.CREATE,
        patient_id=appt.patient_id,
        resource_id=appt.id,
        detail={"guest_participant_id": guest.id, "guest_role": str(role)},
    )
    return guest, token


async def _guest_audit(session: AsyncSession, guest: Guest, event: str, outcome: AuditOutcome) -> None:
    await audit.record(
        session,
        guest.actor(),
        action=AuditAction.READ if event == "join" else AuditAction.UPDATE,
        resource_type=str(Resource.VISIT),
        resource_id=guest.appointment_id,
        patient_id=guest.patient_id,
        outcome=outcome,
        detail={"guest_participant_id": guest.participant_id, "event": event},
    )


def _deny(session: AsyncSession, guest: Guest, event: str) -> None:
    """A refused redemption is audited even though the caller's transaction rolls back."""

    async def write(s: AsyncSession) -> None:
        await _guest_audit(s, guest, event, AuditOutcome.DENIED)

    defer_independent_write(session, write)


def _as_guest(row: VisitParticipant, appt: Appointment, client_addr: str | None) -> Guest:
    assert row.invite_expires_at is not None
    return Guest(
        row.id,
        appt.id,
        appt.org_id,
        appt.patient_id,
        ParticipantRole(row.role),
        row.display_name,
        row.invite_expires_at,
        client_addr,
    )


async def redeem_invitation(session: AsyncSession, *, token: str, client_addr: str | None) -> Guest:
    """Use a one-time link. Refuses unknown, used and expired links and links of finished visits."""
    row = (
        await session.execute(
            select(VisitParticipant)
            .where(VisitParticipant.invite_token_hash == token_digest(token))
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None or row.invite_expires_at is None:
        raise InvitationInvalid("This invitation link is not valid.")
    appt = await session.get(Appointment, row.appointment_id)
    assert appt is not None
    guest = _as_guest(row, appt, client_addr)
    now = utc_now()
    if row.invite_used_at is not None:
        _deny(session, guest, "reuse")
        raise InvitationInvalid("This invitation link has already been used. Ask for a new one.")
    if now >= row.invite_expires_at or appt.status in FINISHED:
        _deny(session, guest, "expired")
        raise InvitationInvalid("This invitation has expired: the visit is over.")
    row.invite_used_at = now
    await _guest_audit(session, guest, "redeem", AuditOutcome.SUCCESS)
    return guest


# ---- the guest cookie --------------------------------------------------------------------------------


def guest_cookie_value(settings: Settings, guest: Guest) -> str:
    """`<participant id>.<expiry>.<mac>`: HMAC-SHA256 under a key derived from the session secret."""
    body = f"{guest.participant_id}.{int(guest.expires_at.timestamp())}"
    return f"{body}.{_mac(settings, body)}"


def _mac(settings: Settings, body: str) -> str:
    key = (settings.secret("session_secret") + ":guest-cookie").encode()
    return base64.urlsafe_b64encode(bytes.fromhex(hmac_sha256(key, body.encode()))).decode().rstrip("=")


async def guest_from_cookie(
    session: AsyncSession, settings: Settings, value: str, client_addr: str | None
) -> Guest | None:
    """The guest a cookie names, while its invitation has been redeemed and has not expired."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not constant_time_equal(parts[2], _mac(settings, body)):
        return None
    row = await session.get(VisitParticipant, int(parts[0]))
    if row is None or row.invite_used_at is None or row.invite_expires_at is None:
        return None
    if utc_now() >= row.invite_expires_at:
        return None
    appt = await session.get(Appointment, row.appointment_id)
    assert appt is not None
    return _as_guest(row, appt, client_addr)


async def guest_may_join(session: AsyncSession, guest: Guest) -> tuple[bool, str | None]:
    """Guests join only while the visit is under way and the licensure gate is not blocking it."""
    appt = await session.get(Appointment, guest.appointment_id)
    if appt is None or appt.status in FINISHED:
        return False, "The visit is over."
    if appt.licensure_blocked_at is not None:
        return False, "This visit cannot take place with this clinician."
    if appt.status != AppointmentStatus.IN_PROGRESS:
        return False, "The clinician has not started the visit yet."
    return True, None


async def record_guest_presence(session: AsyncSession, guest: Guest, *, joined: bool) -> None:
    """Joined / left times of a guest (the visit's participants with roles go into the note)."""
    row = await session.get(VisitParticipant, guest.participant_id)
    assert row is not None
    now = utc_now()
    if joined:
        row.joined_at = row.joined_at or now
        row.left_at = None
    else:
        row.left_at = now
    await _guest_audit(session, guest, "join" if joined else "leave", AuditOutcome.SUCCESS)
