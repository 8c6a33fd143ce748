"""Education actions: give a patient an article, list a patient's articles, read one (the patient's own
reading is recorded on the assignment), and the compartment export (docs/education.md#assignments).

Every action is `(session, principal, *, ...)`, authorises through the policy (Resource EDUCATION, audited
like every access to a patient's data) and publishes `education.changed` (ids only) after commit. The
article library itself is project content, not patient data: browsing it needs a login, not a grant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.education.library import Article, library
from telecare.education.models import EducationAssignment

TOPIC = "education.changed"
ED = Resource.EDUCATION
NOTE_MAX = 1000


class AssignmentNotFound(NotFound):
    code = "education_assignment_not_found"
    title = "Education assignment not found"


class ArticleNotFound(NotFound):
    code = "article_not_found"
    title = "Article not found"


class OnlyClinicians(Forbidden):
    code = "clinicians_assign"
    title = "Only clinicians assign articles"


def article(slug: str) -> Article:
    found = library().get(slug)
    if found is None:
        raise ArticleNotFound(f"No article {slug!r}.")
    return found


def articles(*, topic: str | None = None, disposition: str | None = None) -> list[Article]:
    """The library, by title, optionally narrowed to a topic or a triage disposition."""
    out = [
        a
        for a in library().values()
        if (topic is None or topic in a.topics) and (disposition is None or disposition in a.dispositions)
    ]
    return sorted(out, key=lambda a: a.title)


def _publish(session: AsyncSession, row: EducationAssignment, change: str) -> None:
    as_uow(session).publish(TOPIC, {"patient_id": row.patient_id, "id": row.id, "change": change})


async def assign_article(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    slug: str,
    note: str = "",
    source_kind: str = "clinician",
    source_id: str = "",
) -> tuple[EducationAssignment, bool]:
    """A clinician caring for the patient gives them an article, with an optional note. Giving an article
    the patient already has keeps the assignment and its reading record (a new note replaces the old one)
    and returns it with `created` False: a retried request never adds a second copy."""
    await access.open_patient(
        session, principal, patient_id, resource=ED, action=Action.CREATE, audit_access=False
    )
    if not access_rules.is_clinician(principal):
        raise OnlyClinicians()
    errors = []
    if slug not in library():
        errors.append(FieldError("article", "the slug of an article of the library"))
    note = note.strip()
    if len(note) > NOTE_MAX:
        errors.append(FieldError("note", f"at most {NOTE_MAX} characters"))
    if errors:
        raise ValidationFailed("The assignment is not valid.", errors=errors)
    row = (
        await session.execute(
            select(EducationAssignment).where(
                EducationAssignment.patient_id == patient_id, EducationAssignment.article_slug == slug
            )
        )
    ).scalar_one_or_none()
    created = row is None
    if row is None:
        row = EducationAssignment(
            org_id=principal.org_id,
            patient_id=patient_id,
            article_slug=slug,
            note=note,
            source_kind=source_kind,
            source_id=source_id,
            assigned_by_user_id=principal.user_id,
            assigned_at=utc_now(),
            read_count=0,
        )
        session.add(row)
    elif note:
        row.note = note
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=ED,
        action=Action.CREATE,
        patient_id=patient_id,
        resource_id=row.id,
        detail={"article": slug, **({} if created else {"again": True}), "source": source_kind},
    )
    _publish(session, row, "assigned" if created else "assigned_again")
    return row, created


async def list_assignments(
    session: AsyncSession, principal: Principal, *, patient_id: int | None = None
) -> list[EducationAssignment]:
    """Assignments of the patients in the caller's reach (a patient: their own), newest first; with
    `patient_id`, that patient's (empty when out of reach). Audited per patient returned."""
    if access_rules.is_patient(principal):
        patient_id = principal.patient_id if principal.patient_id is not None else -1
    scope = access.patient_scope(principal, ED, Action.SEARCH)
    stmt = select(EducationAssignment).where(
        EducationAssignment.org_id == principal.org_id,
        EducationAssignment.patient_id.in_(scope.scalar_subquery()),
    )
    if patient_id is not None:
        stmt = stmt.where(EducationAssignment.patient_id == patient_id)
    rows = list(
        (
            await session.execute(
                stmt.order_by(EducationAssignment.assigned_at.desc(), EducationAssignment.id.desc()).limit(
                    500
                )
            )
        ).scalars()
    )
    await access.record_search(
        session,
        principal,
        resource=ED,
        patient_ids=[r.patient_id for r in rows],
        query={"patient_id": patient_id},
    )
    return rows


@dataclass
class AssignmentView:
    assignment: EducationAssignment
    article: Article | None  # None: the article left the library since it was given


async def read_assignment(
    session: AsyncSession, principal: Principal, *, assignment_id: int
) -> AssignmentView:
    """One assignment with its article (a read: it changes nothing)."""
    row = await access.open_patient_record(
        session,
        principal,
        EducationAssignment,
        assignment_id,
        resource=ED,
        action=Action.READ,
        not_found=AssignmentNotFound,
    )
    return AssignmentView(row, library().get(row.article_slug))


async def record_reading(
    session: AsyncSession, principal: Principal, *, assignment_id: int
) -> AssignmentView:
    """The patient opens an article they were given: first and last read and the count are recorded, and
    the care team sees it in the chart. Only the patient writes their reading record (the policy's update
    grant on EDUCATION is the patient's own reach)."""
    row = await access.open_patient_record(
        session,
        principal,
        EducationAssignment,
        assignment_id,
        resource=ED,
        action=Action.UPDATE,
        not_found=AssignmentNotFound,
    )
    now = utc_now()
    if row.first_read_at is None:
        row.first_read_at = now
    row.last_read_at = now
    row.read_count = (row.read_count or 0) + 1
    await session.flush()
    _publish(session, row, "read")
    return AssignmentView(row, library().get(row.article_slug))


def assignment_json(row: EducationAssignment) -> dict[str, Any]:
    found = library().get(row.article_slug)
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "article": row.article_slug,
        "title": found.title if found else row.article_slug,
        "summary": found.summary if found else "",
        "note": row.note,
        "source": {"kind": row.source_kind, "id": row.source_id or None},
        "assigned_by_user_id": row.assigned_by_user_id,
        "assigned_at": row.assigned_at.isoformat(),
        "first_read_at": row.first_read_at.isoformat() if row.first_read_at else None,
        "last_read_at": row.last_read_at.isoformat() if row.last_read_at else None,
        "read_count": row.read_count,
    }


async def export_education(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's education assignments and reading record for the compartment export."""
    rows = (
        (
            await session.execute(
                select(EducationAssignment)
                .where(EducationAssignment.patient_id == patient_id)
                .order_by(EducationAssignment.id)
            )
        )
        .scalars()
        .all()
    )
    return {"assignments": [assignment_json(r) for r in rows]}
