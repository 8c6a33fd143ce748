"""Demo data for screening: the demo patient has PHQ-9 every 14 days from Dr. Lindqvist (the next one due
now) and two earlier PHQ-9 and GAD-7 responses, so the chart shows a trend. Called by `identity.demo.load`
(a system import: the whole load is audited once there)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.core.time import utc_now
from telecare.identity.models import Patient, User
from telecare.questionnaires import engine, rules
from telecare.questionnaires.models import (
    QuestionnaireAnswerSet,
    QuestionnaireAssignment,
    QuestionnaireScore,
    ResponseStatus,
)

CODES = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
# (questionnaire, days ago, item values): item 9 stays at "not at all" in the demo.
HISTORY = [
    ("phq-9", 42, [2, 2, 2, 1, 2, 1, 1, 1, 0]),
    ("phq-9", 28, [1, 2, 1, 1, 1, 1, 1, 0, 0]),
    ("phq-9", 14, [1, 1, 1, 1, 0, 1, 0, 0, 0]),
    ("gad-7", 28, [2, 2, 1, 2, 1, 1, 1]),
    ("gad-7", 14, [1, 1, 1, 1, 0, 1, 1]),
]


async def seed_demo_questionnaires(session: AsyncSession, org_id: int) -> None:
    users = {
        u.email.split("@")[0]: u
        for u in (await session.execute(select(User).where(User.org_id == org_id))).scalars()
    }
    patient = (
        await session.execute(select(Patient).where(Patient.user_id == users["patient"].id))
    ).scalar_one()
    now = utc_now()
    assignment = QuestionnaireAssignment(
        org_id=org_id,
        patient_id=patient.id,
        questionnaire=rules.PHQ9,
        assigned_by_user_id=users["dr.lindqvist"].id,
        every_days=14,
        due_at=now,
        created_at=now - timedelta(days=43),
        last_completed_at=now - timedelta(days=14),
    )
    session.add(assignment)
    await session.flush()
    lib = engine.library()
    for slug, days, values in HISTORY:
        definition = lib[slug]
        at = now - timedelta(days=days)
        answers = {f"{slug}-{n}": CODES[v] for n, v in enumerate(values, 1)}
        row = QuestionnaireAnswerSet(
            org_id=org_id,
            patient_id=patient.id,
            questionnaire=slug,
            questionnaire_version=definition.version,
            assignment_id=assignment.id if slug == rules.PHQ9 else None,
            status=ResponseStatus.COMPLETED,
            answers=answers,
            author_user_id=users["patient"].id,
            started_at=at,
            updated_at=at,
            completed_at=at,
        )
        session.add(row)
        await session.flush()
        total = engine.score(definition, answers)
        assert total is not None
        assert definition.total_code
        session.add(
            QuestionnaireScore(
                org_id=org_id,
                patient_id=patient.id,
                response_id=row.id,
                questionnaire=slug,
                loinc=definition.total_code,
                value=total,
                band=rules.band(slug, total) or "",
                effective_at=at,
            )
        )
    await session.flush()
