"""Demo data for asynchronous care: the team inboxes with their members, one conversation between the demo
patient and primary care, and the e-consult queues. Called by `identity.demo.load` (a system import: the
whole load is audited once there)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.time import utc_now
from telecare.econsult.models import ConsultQueue, ConsultQueueMember
from telecare.identity.models import Patient, User
from telecare.messaging.models import Inbox, InboxKind, InboxMember, Message, Thread

# (slug, name, kind, business days to answer, member email local parts)
INBOXES = [
    # Dr. Chen and nurse Garcia stay out of Ava's team on purpose: the demo shows break the glass with them.
    ("primary-care", "Primary care", InboxKind.PRIMARY_CARE, 2, ["dr.rivera", "nurse.okafor"]),
    ("behavioral-health", "Behavioral health", InboxKind.BEHAVIORAL_HEALTH, 1, ["dr.lindqvist"]),
    ("pharmacy", "Pharmacy", InboxKind.PHARMACY, 2, ["pharm.nguyen"]),
    (
        "remote-monitoring",
        "Remote monitoring",
        InboxKind.REMOTE_MONITORING,
        1,
        ["nurse.okafor", "nurse.garcia"],
    ),
]
# (specialty, name, member email local parts)
CONSULT_QUEUES = [
    ("dermatology", "Dermatology", ["dr.chen"]),
    ("psychiatry", "Psychiatry and psychology", ["dr.lindqvist"]),
    ("clinical-pharmacy", "Clinical pharmacy", ["pharm.nguyen"]),
]


async def seed_demo_messaging(session: AsyncSession, org_id: int) -> None:
    users = {
        u.email.split("@")[0]: u
        for u in (await session.execute(select(User).where(User.org_id == org_id))).scalars()
    }
    inbox_ids: dict[str, int] = {}
    for slug, name, kind, days, members in INBOXES:
        inbox = Inbox(org_id=org_id, slug=slug, name=name, kind=kind, response_business_days=days)
        session.add(inbox)
        await session.flush()
        inbox_ids[slug] = inbox.id
        for local in members:
            session.add(InboxMember(org_id=org_id, inbox_id=inbox.id, user_id=users[local].id))
    for specialty, name, members in CONSULT_QUEUES:
        queue = ConsultQueue(org_id=org_id, specialty=specialty, name=name)
        session.add(queue)
        await session.flush()
        for local in members:
            session.add(ConsultQueueMember(org_id=org_id, queue_id=queue.id, user_id=users[local].id))
    patient_user = users["patient"]
    patient = (await session.execute(select(Patient).where(Patient.user_id == patient_user.id))).scalar_one()
    asked = utc_now() - timedelta(days=1)
    thread = Thread(
        org_id=org_id,
        patient_id=patient.id,
        inbox_id=inbox_ids["primary-care"],
        subject="Blood pressure medicine refill",
        patient_initiated=True,
        started_by_user_id=patient_user.id,
        created_at=asked,
        last_message_at=asked + timedelta(hours=3),
        first_response_at=asked + timedelta(hours=3),
    )
    session.add(thread)
    await session.flush()
    nurse = users["nurse.okafor"]
    session.add_all(
        [
            Message(
                org_id=org_id,
                thread_id=thread.id,
                patient_id=patient.id,
                sender_user_id=patient_user.id,
                from_patient=True,
                body="I have three lisinopril tablets left. Can you send a refill to my usual pharmacy?",
                created_at=asked,
                read_at=asked + timedelta(hours=2),
                read_by_user_id=nurse.id,
            ),
            Message(
                org_id=org_id,
                thread_id=thread.id,
                patient_id=patient.id,
                sender_user_id=nurse.id,
                from_patient=False,
                body="Dr. Rivera has sent the refill; it should be ready tomorrow. Keep logging your BP.",
                created_at=asked + timedelta(hours=3),
            ),
        ]
    )
