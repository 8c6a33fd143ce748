"""Demo data for visits: visit types, weekday availability for every demo clinician, the telehealth consent
and the organization's scheduling rules. Called by `identity.demo.load`."""

from __future__ import annotations

from datetime import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.identity.models import Practitioner
from telecare.scheduling.models import (
    POLICY_DEFAULTS,
    AvailabilityTemplate,
    Modality,
    PatientKind,
    SchedulingPolicy,
    VisitType,
)
from telecare.visits.models import ConsentText

DEMO_CONSENT = """By continuing you agree to receive care by secure video or telephone.
- A remote visit has limits: your clinician cannot examine you in person and may ask you to come in.
- You confirm where you are at the start of each visit; your clinician must be licensed in that state.
- If the connection drops, your clinician will call you back on the number you give.
- In an emergency, call 911.
- Your visit is not recorded. You may stop the visit or ask for an in-person visit at any time."""


async def seed_demo_visits(session: AsyncSession, org_id: int) -> None:
    session.add(SchedulingPolicy(org_id=org_id, **POLICY_DEFAULTS))
    session.add_all(
        [
            VisitType(
                org_id=org_id,
                name="New patient video visit",
                duration_minutes=45,
                modalities=[Modality.VIDEO, Modality.AUDIO],
                patient_kind=PatientKind.NEW,
            ),
            VisitType(
                org_id=org_id,
                name="Follow-up",
                duration_minutes=20,
                modalities=[Modality.VIDEO, Modality.AUDIO],
                patient_kind=PatientKind.ESTABLISHED,
            ),
            VisitType(
                org_id=org_id,
                name="Phone check-in",
                duration_minutes=15,
                modalities=[Modality.AUDIO],
                patient_kind=PatientKind.ESTABLISHED,
            ),
            ConsentText(org_id=org_id, version=1, title="Telehealth consent", body=DEMO_CONSENT),
        ]
    )
    practitioners = (
        await session.execute(select(Practitioner.id).where(Practitioner.org_id == org_id))
    ).scalars()
    for pid in practitioners:
        for weekday in range(5):
            for start, end in ((time(9), time(12)), (time(13), time(17))):
                session.add(
                    AvailabilityTemplate(
                        org_id=org_id, practitioner_id=pid, weekday=weekday, start_time=start, end_time=end
                    )
                )
    await session.flush()
