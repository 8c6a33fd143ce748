"""Demo data for education: Dr. Lindqvist gave the demo patient two articles ten days ago; the patient read
the blood-pressure one twice, not the video-visit one yet. Called by `identity.demo.load` (a system import:
the whole load is audited once there)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.time import utc_now
from telecare.education.models import EducationAssignment
from telecare.identity.models import Patient, User


async def seed_demo_education(session: AsyncSession, org_id: int) -> None:
    users = {
        u.email.split("@")[0]: u
        for u in (await session.execute(select(User).where(User.org_id == org_id))).scalars()
    }
    patient = (
        await session.execute(select(Patient).where(Patient.user_id == users["patient"].id))
    ).scalar_one()
    now = utc_now()
    given = now - timedelta(days=10)
    session.add_all(
        [
            EducationAssignment(
                org_id=org_id,
                patient_id=patient.id,
                article_slug="high-blood-pressure-at-home",
                note="Please measure twice a day this week, as we discussed.",
                source_kind="clinician",
                source_id="",
                assigned_by_user_id=users["dr.lindqvist"].id,
                assigned_at=given,
                first_read_at=given + timedelta(hours=3),
                last_read_at=now - timedelta(days=2),
                read_count=2,
            ),
            EducationAssignment(
                org_id=org_id,
                patient_id=patient.id,
                article_slug="preparing-for-a-video-visit",
                note="",
                source_kind="clinician",
                source_id="",
                assigned_by_user_id=users["dr.lindqvist"].id,
                assigned_at=given,
                read_count=0,
            ),
        ]
    )
