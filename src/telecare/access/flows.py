"""Break the glass: a clinician outside the care team opens one patient's record in an emergency."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access.models import BreakGlassGrant
from telecare.access.policy import Action, Resource
from telecare.access.service import (
    BreakGlassRefused,
    PatientNotAccessible,
    break_glass_duration,
    reach_for,
    record_denial,
)
from telecare.audit import service as audit
from telecare.audit.models import AuditAction, Purpose
from telecare.auth.dependencies import defer_independent_write
from telecare.auth.principal import Principal
from telecare.auth.sessions import count_password_failure, passwords
from telecare.core.db import as_uow
from telecare.core.time import utc_now
from telecare.identity.models import Organization, Patient, User
from telecare.notifications.service import notify

MIN_REASON_CHARS = 10


async def break_the_glass(
    session: AsyncSession, principal: Principal, *, patient_id: int, reason: str, password: str
) -> BreakGlassGrant:
    """Grant time-bounded (<= 60 min) emergency access to one patient after a reason and re-entered
    password; audited with purpose ETREAT; the organization's privacy contact is notified."""
    reach_for(principal, Resource.BREAK_GLASS, Action.CREATE)
    reason = reason.strip()
    db = as_uow(session).db
    settings = db.settings
    # The password re-entry is a password check like sign-in: each wrong password counts toward the account
    # lockout, which ends every session of the user (so guessing stops after login_max_failures tries),
    # written independently of this refused request's rollback (docs/security.md).
    user = await session.get(User, principal.user_id)
    assert user is not None
    password_ok = passwords(settings).verify(user.password_hash, password)
    if not password_ok:
        user_id = user.id

        async def count(s: AsyncSession) -> None:
            again = await s.get(User, user_id)
            if again is not None:
                await count_password_failure(s, again, settings)

        defer_independent_write(session, count)
    if len(reason) < MIN_REASON_CHARS or not password_ok:
        record_denial(
            session,
            principal,
            resource=Resource.BREAK_GLASS,
            action=Action.CREATE,
            patient_id=patient_id,
            resource_id=None,
        )
        raise BreakGlassRefused(
            "Give the emergency reason (at least 10 characters) and re-enter your password."
        )
    patient = (
        await session.execute(
            select(Patient).where(Patient.id == patient_id, Patient.org_id == principal.org_id)
        )
    ).scalar_one_or_none()
    if patient is None:
        raise PatientNotAccessible()
    now = utc_now()
    grant = BreakGlassGrant(
        org_id=principal.org_id,
        user_id=principal.user_id,
        patient_id=patient_id,
        reason=reason,
        created_at=now,
        expires_at=now + break_glass_duration(session),
    )
    session.add(grant)
    await session.flush()
    await audit.record(
        session,
        principal.actor(),
        action=AuditAction.BREAK_GLASS,
        resource_type=str(Resource.BREAK_GLASS),
        resource_id=grant.id,
        patient_id=patient_id,
        purpose=Purpose.EMERGENCY,
        detail={"expires_at": grant.expires_at.isoformat(), "grant_id": grant.id},
    )
    org = await session.get(Organization, principal.org_id)
    assert org is not None
    admins = (
        (
            await session.execute(
                select(User.id).where(User.org_id == org.id, User.role == "admin", User.is_active.is_(True))
            )
        )
        .scalars()
        .all()
    )
    # The body names ids only: the reason may hold clinical detail and stays in the audited grant.
    body = (
        f"Emergency access (break-the-glass) was opened by user {principal.user_id} "
        f"for patient record {patient_id} until {grant.expires_at:%Y-%m-%d %H:%M} UTC. "
        "Review it under Privacy > Emergency accesses."
    )
    await notify(
        session,
        org_id=org.id,
        kind="break_glass",
        subject="Telecare: emergency access opened",
        body=body,
        recipient_email=org.privacy_contact_email,
        link="/admin/break-glass",
    )
    for admin_id in admins:
        await notify(
            session,
            org_id=org.id,
            kind="break_glass",
            subject="Emergency access opened",
            body=body,
            recipient_user_id=admin_id,
            link="/admin/break-glass",
        )
    return grant


async def list_emergency_accesses(
    session: AsyncSession, principal: Principal, *, limit: int = 500
) -> list[tuple[BreakGlassGrant, User]]:
    """Break-the-glass grants of the organization with the user who opened each, newest first (privacy
    review). Patients are named by record id only: reviewers hold no grant on patient data."""
    reach_for(principal, Resource.BREAK_GLASS, Action.SEARCH)
    rows = await session.execute(
        select(BreakGlassGrant, User)
        .join(User, User.id == BreakGlassGrant.user_id)
        .where(BreakGlassGrant.org_id == principal.org_id)
        .order_by(BreakGlassGrant.id.desc())
        .limit(limit)
    )
    return [(grant, user) for grant, user in rows]
