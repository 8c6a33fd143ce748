"""Questionnaire actions: assign (once or on a schedule), start or resume a response, save answers as
they are given, complete and score, and read a patient's questionnaires, scores and due list
(docs/questionnaires.md).

Every action is `(session, principal, *, ...)`, authorises through the policy (Resource
QUESTIONNAIRE_RESPONSE, audited), writes, and publishes `questionnaire.changed` (ids only) after commit.
Saving answers never throws away what was given: answers that are valid are stored even when required ones
are still missing (the result lists them), so a PHQ-9 item-9 answer is kept, and its task raised, from the
first save (docs/questionnaires.md#item-9)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.caretasks import service as caretasks
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.questionnaires import engine, rules
from telecare.questionnaires.models import (
    QuestionnaireAnswerSet,
    QuestionnaireAssignment,
    QuestionnaireScore,
    ResponseStatus,
)

TOPIC = "questionnaire.changed"
QR = Resource.QUESTIONNAIRE_RESPONSE


class QuestionnaireNotFound(NotFound):
    code = "questionnaire_not_found"
    title = "Questionnaire not found"


class ResponseNotFound(NotFound):
    code = "questionnaire_response_not_found"
    title = "Questionnaire response not found"


class AssignmentNotFound(NotFound):
    code = "questionnaire_assignment_not_found"
    title = "Assignment not found"


class ResponseCompleted(Conflict):
    code = "questionnaire_response_completed"
    title = "This questionnaire has been submitted"


class OnlyClinicians(Forbidden):
    code = "clinicians_assign"
    title = "Only clinicians assign questionnaires"


def definition(slug: str) -> engine.Definition:
    found = engine.library().get(slug)
    if found is None:
        raise QuestionnaireNotFound(f"No questionnaire {slug!r}.")
    return found


def definitions() -> list[engine.Definition]:
    return list(engine.library().values())


def _publish(
    session: AsyncSession, row: QuestionnaireAnswerSet | QuestionnaireAssignment, change: str
) -> None:
    as_uow(session).publish(TOPIC, {"patient_id": row.patient_id, "id": row.id, "change": change})


async def _audit(
    session: AsyncSession,
    principal: Principal,
    patient_id: int,
    rid: int,
    action: Action,
    detail: dict[str, Any],
) -> None:
    await access.record_access(
        session, principal, resource=QR, action=action, patient_id=patient_id, resource_id=rid, detail=detail
    )


# ---- assignments -----------------------------------------------------------------------------------------


async def assign(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    questionnaire: str,
    every_days: int | None = None,
    first_due: datetime | None = None,
) -> QuestionnaireAssignment:
    """A clinician caring for the patient assigns a questionnaire once, or every `every_days` days (PHQ-9
    every 14 days for a behavioural-health caseload); the first is due at `first_due` (default now)."""
    await access.open_patient(session, principal, patient_id, resource=QR, action=Action.CREATE)
    if not access_rules.is_clinician(principal):
        raise OnlyClinicians()
    errors = []
    if questionnaire not in engine.library():
        errors.append(FieldError("questionnaire", f"one of {sorted(engine.library())}"))
    if every_days is not None and not 1 <= every_days <= 365:
        errors.append(FieldError("every_days", "between 1 and 365, or empty for once"))
    now = utc_now()
    if first_due is not None and first_due.tzinfo is None:
        errors.append(FieldError("first_due", "a time with its UTC offset"))
    if errors:
        raise ValidationFailed("The assignment is not valid.", errors=errors)
    row = QuestionnaireAssignment(
        org_id=principal.org_id,
        patient_id=patient_id,
        questionnaire=questionnaire,
        assigned_by_user_id=principal.user_id,
        every_days=every_days,
        due_at=first_due or now,
        active=True,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await _audit(
        session,
        principal,
        patient_id,
        row.id,
        Action.CREATE,
        {"assigned": questionnaire, "every_days": every_days},
    )
    _publish(session, row, "assigned")
    return row


async def end_assignment(session: AsyncSession, principal: Principal, *, assignment_id: int) -> None:
    row = await access.open_patient_record(
        session,
        principal,
        QuestionnaireAssignment,
        assignment_id,
        resource=QR,
        action=Action.UPDATE,
        not_found=AssignmentNotFound,
    )
    if not access_rules.is_clinician(principal):
        raise OnlyClinicians()
    row.active = False
    await session.flush()
    await _audit(session, principal, row.patient_id, row.id, Action.UPDATE, {"ended_assignment": row.id})
    _publish(session, row, "ended")


# ---- responses --------------------------------------------------------------------------------------------


async def start_response(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    questionnaire: str,
    assignment_id: int | None = None,
) -> QuestionnaireAnswerSet:
    """Start (or resume: the open one for the same questionnaire and assignment) a response."""
    await access.open_patient(session, principal, patient_id, resource=QR, action=Action.CREATE)
    found = definition(questionnaire)
    if assignment_id is not None:
        assignment = await session.get(QuestionnaireAssignment, assignment_id)
        if (
            assignment is None
            or assignment.patient_id != patient_id
            or assignment.questionnaire != questionnaire
        ):
            raise ValidationFailed(
                "Not an assignment of this questionnaire to this patient.",
                errors=[FieldError("assignment_id", "an assignment of this questionnaire to this patient")],
            )
    open_row = (
        (
            await session.execute(
                select(QuestionnaireAnswerSet)
                .where(
                    QuestionnaireAnswerSet.patient_id == patient_id,
                    QuestionnaireAnswerSet.questionnaire == questionnaire,
                    QuestionnaireAnswerSet.status == str(ResponseStatus.IN_PROGRESS),
                    QuestionnaireAnswerSet.assignment_id.is_(None)
                    if assignment_id is None
                    else QuestionnaireAnswerSet.assignment_id == assignment_id,
                )
                .order_by(QuestionnaireAnswerSet.id.desc())
            )
        )
        .scalars()
        .first()
    )
    if open_row is not None:
        return open_row
    now = utc_now()
    row = QuestionnaireAnswerSet(
        org_id=principal.org_id,
        patient_id=patient_id,
        questionnaire=questionnaire,
        questionnaire_version=found.version,
        assignment_id=assignment_id,
        status=ResponseStatus.IN_PROGRESS,
        answers={},
        author_user_id=principal.user_id,
        started_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await _audit(session, principal, patient_id, row.id, Action.CREATE, {"questionnaire": questionnaire})
    _publish(session, row, "started")
    return row


@dataclass
class SaveResult:
    response: QuestionnaireAnswerSet
    missing: list[FieldError] = field(default_factory=list)  # required questions still unanswered
    crisis: bool = False  # show the crisis resources now
    score: QuestionnaireScore | None = None


async def save_answers(
    session: AsyncSession,
    principal: Principal,
    *,
    response_id: int,
    answers: dict[str, Any],
    complete: bool = False,
) -> SaveResult:
    """Merge `answers` (`{linkId: value}`; an empty value clears an answer) into the response and save.

    A value that does not fit its question is refused (422 naming `answers.<linkId>`, nothing saved). The
    PHQ-9 item-9 rule runs on every save, before anything else can fail: an answer above "not at all"
    raises the care team's task at once, in this transaction. With `complete`, a response whose required
    questions are all answered is submitted and scored; otherwise it stays in progress with the answers
    given kept, and the result lists what is missing."""
    row = await access.open_patient_record(
        session,
        principal,
        QuestionnaireAnswerSet,
        response_id,
        resource=QR,
        action=Action.UPDATE,
        not_found=ResponseNotFound,
    )
    if row.status == ResponseStatus.COMPLETED:
        raise ResponseCompleted("This questionnaire was submitted; start a new one to answer again.")
    found = definition(row.questionnaire)
    values, errors = engine.check_answers(found, answers)
    if errors:
        raise ValidationFailed("Some answers do not fit their questions.", errors=errors)
    merged = dict(row.answers or {})
    for link_id, value in values.items():
        if value is None:
            merged.pop(link_id, None)
        else:
            merged[link_id] = value
    merged = engine.prune(found, merged)
    now = utc_now()
    row.answers = merged
    row.updated_at = now
    result = SaveResult(row)
    if rules.item9_positive(row.questionnaire, merged):
        await _raise_item9(session, principal, row, found, merged)
    result.crisis = row.crisis_at is not None
    result.missing = engine.missing_required(found, merged)
    if complete and not result.missing:
        result.score = await _complete(session, principal, row, found, now)
    await session.flush()
    done = str(row.status) == str(ResponseStatus.COMPLETED)
    await _audit(
        session,
        principal,
        row.patient_id,
        row.id,
        Action.UPDATE,
        {"answered": sorted(values), "completed": done},
    )
    _publish(session, row, "completed" if done else "saved")
    return result


async def _raise_item9(
    session: AsyncSession,
    principal: Principal,
    row: QuestionnaireAnswerSet,
    found: engine.Definition,
    answers: dict[str, Any],
) -> None:
    """docs/questionnaires.md#item-9: the task is raised once per response, whoever enters the answer."""
    item = found.item(rules.ITEM9)
    option = item.option(str(answers[rules.ITEM9])) if item is not None else None
    assignee = None
    if row.assignment_id is not None:
        assignment = await session.get(QuestionnaireAssignment, row.assignment_id)
        assignee = assignment.assigned_by_user_id if assignment is not None else None
    if row.crisis_at is None:
        row.crisis_at = utc_now()
    await caretasks.raise_task(
        session,
        principal,
        patient_id=row.patient_id,
        kind=rules.ITEM9_TASK_KIND,
        title=rules.ITEM9_TASK_TITLE,
        detail=f'PHQ-9 item 9 ("{item.text if item else ""}"): {option.display if option else ""}.',
        priority="stat",
        due_within=rules.ITEM9_ACK_WITHIN,
        source_kind="QuestionnaireResponse",
        source_id=str(row.id),
        assignee_user_id=assignee,
    )


async def _complete(
    session: AsyncSession,
    principal: Principal,
    row: QuestionnaireAnswerSet,
    found: engine.Definition,
    now: datetime,
) -> QuestionnaireScore | None:
    row.status = ResponseStatus.COMPLETED
    row.completed_at = now
    score_row = None
    total = engine.score(found, row.answers)
    if total is not None and found.total_code:
        score_row = QuestionnaireScore(
            org_id=row.org_id,
            patient_id=row.patient_id,
            response_id=row.id,
            questionnaire=row.questionnaire,
            loinc=found.total_code,
            value=total,
            band=rules.band(row.questionnaire, total) or "",
            effective_at=now,
        )
        session.add(score_row)
    if row.assignment_id is not None:
        assignment = await session.get(QuestionnaireAssignment, row.assignment_id)
        if assignment is not None and assignment.active:
            assignment.last_completed_at = now
            if assignment.every_days:
                assignment.due_at = now + timedelta(days=assignment.every_days)
            else:
                assignment.active = False
    return score_row


# ---- reading ----------------------------------------------------------------------------------------------


@dataclass
class ResponseView:
    response: QuestionnaireAnswerSet
    definition: engine.Definition
    score: QuestionnaireScore | None
    missing: list[FieldError]

    @property
    def crisis(self) -> bool:
        return self.response.crisis_at is not None


async def get_response(session: AsyncSession, principal: Principal, *, response_id: int) -> ResponseView:
    row = await access.open_patient_record(
        session,
        principal,
        QuestionnaireAnswerSet,
        response_id,
        resource=QR,
        action=Action.READ,
        not_found=ResponseNotFound,
    )
    found = definition(row.questionnaire)
    score = (
        await session.execute(select(QuestionnaireScore).where(QuestionnaireScore.response_id == row.id))
    ).scalar_one_or_none()
    return ResponseView(row, found, score, engine.missing_required(found, row.answers or {}))


@dataclass
class DueItem:
    assignment: QuestionnaireAssignment
    title: str
    overdue: bool
    patient_name: str = ""


@dataclass
class PatientQuestionnaires:
    due: list[DueItem]
    in_progress: list[QuestionnaireAnswerSet]
    completed: list[QuestionnaireAnswerSet]
    scores: list[QuestionnaireScore]
    scores_by_response: dict[int, QuestionnaireScore]


async def patient_questionnaires(
    session: AsyncSession, principal: Principal, *, patient_id: int
) -> PatientQuestionnaires:
    """One patient's questionnaires: what is assigned with its next due date, what is in progress, what was
    answered before, and the scores over time (My questionnaires; the chart)."""
    await access.open_patient(session, principal, patient_id, resource=QR, action=Action.SEARCH)
    now = utc_now()
    assignments = (
        (
            await session.execute(
                select(QuestionnaireAssignment)
                .where(
                    QuestionnaireAssignment.patient_id == patient_id, QuestionnaireAssignment.active.is_(True)
                )
                .order_by(QuestionnaireAssignment.due_at)
            )
        )
        .scalars()
        .all()
    )
    responses = (
        (
            await session.execute(
                select(QuestionnaireAnswerSet)
                .where(QuestionnaireAnswerSet.patient_id == patient_id)
                .order_by(QuestionnaireAnswerSet.id.desc())
                .limit(200)
            )
        )
        .scalars()
        .all()
    )
    scores = (
        (
            await session.execute(
                select(QuestionnaireScore)
                .where(QuestionnaireScore.patient_id == patient_id)
                .order_by(QuestionnaireScore.effective_at)
            )
        )
        .scalars()
        .all()
    )
    lib = engine.library()
    return PatientQuestionnaires(
        due=[
            DueItem(
                a, lib[a.questionnaire].title if a.questionnaire in lib else a.questionnaire, a.due_at < now
            )
            for a in assignments
        ],
        in_progress=[r for r in responses if r.status == ResponseStatus.IN_PROGRESS],
        completed=[r for r in responses if r.status == ResponseStatus.COMPLETED],
        scores=list(scores),
        scores_by_response={s.response_id: s for s in scores},
    )


async def due_list(session: AsyncSession, principal: Principal, *, within_days: int = 0) -> list[DueItem]:
    """Assignments due (or overdue) now, or within `within_days`, across the patients in the caller's care."""
    scope = access.patient_scope(principal, QR, Action.SEARCH)
    now = utc_now()
    rows = (
        (
            await session.execute(
                select(QuestionnaireAssignment)
                .where(
                    QuestionnaireAssignment.org_id == principal.org_id,
                    QuestionnaireAssignment.active.is_(True),
                    QuestionnaireAssignment.due_at <= now + timedelta(days=within_days),
                    QuestionnaireAssignment.patient_id.in_(scope.scalar_subquery()),
                )
                .order_by(QuestionnaireAssignment.due_at)
                .limit(500)
            )
        )
        .scalars()
        .all()
    )
    from telecare.messaging.repository import patient_names

    names = {k: v[0] for k, v in (await patient_names(session, {r.patient_id for r in rows})).items()}
    await access.record_search(
        session,
        principal,
        resource=QR,
        patient_ids=[r.patient_id for r in rows],
        query={"due_within": within_days},
    )
    lib = engine.library()
    return [
        DueItem(
            r,
            lib[r.questionnaire].title if r.questionnaire in lib else r.questionnaire,
            r.due_at < now,
            names.get(r.patient_id, ""),
        )
        for r in rows
    ]


async def search_responses(
    session: AsyncSession, principal: Principal, *, patient_id: int | None = None, status: str | None = None
) -> list[QuestionnaireAnswerSet]:
    """Responses of the patients in the caller's reach (a patient: their own), newest first; a patient out
    of reach gives an empty list. Audited per patient returned."""
    if status is not None and status not in {str(s) for s in ResponseStatus}:
        raise ValidationFailed("Unknown status.", errors=[FieldError("status", "in-progress or completed")])
    scope = access.patient_scope(principal, QR, Action.SEARCH)
    stmt = select(QuestionnaireAnswerSet).where(
        QuestionnaireAnswerSet.org_id == principal.org_id,
        QuestionnaireAnswerSet.patient_id.in_(scope.scalar_subquery()),
    )
    if patient_id is not None:
        stmt = stmt.where(QuestionnaireAnswerSet.patient_id == patient_id)
    if status is not None:
        stmt = stmt.where(QuestionnaireAnswerSet.status == status)
    rows = list((await session.execute(stmt.order_by(QuestionnaireAnswerSet.id.desc()).limit(500))).scalars())
    await access.record_search(
        session,
        principal,
        resource=QR,
        patient_ids=[r.patient_id for r in rows],
        query={"patient_id": patient_id},
    )
    return rows


# ---- FHIR shapes -----------------------------------------------------------------------------------------


def _answer(item: engine.Item, value: Any) -> dict[str, Any]:
    if item.type == "choice":
        option = item.option(str(value))
        coding = (
            {"system": option.system, "code": option.code, "display": option.display}
            if option
            else {"code": str(value)}
        )
        return {"valueCoding": coding}
    key = {
        "integer": "valueInteger",
        "decimal": "valueDecimal",
        "string": "valueString",
        "text": "valueString",
        "date": "valueDate",
        "boolean": "valueBoolean",
    }[item.type]
    return {key: value}


def to_fhir(view: ResponseView, base: str = "") -> dict[str, Any]:
    """The response as a FHIR R4 QuestionnaireResponse: every answered item kept, in the definition's
    order and nesting."""
    answers = view.response.answers or {}

    def items(defs: tuple[engine.Item, ...]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for item in defs:
            if item.type == "display":
                continue
            entry: dict[str, Any] = {"linkId": item.link_id, "text": item.text}
            if item.type == "group":
                children = items(item.children)
                if children:
                    entry["item"] = children
                    out.append(entry)
                continue
            if item.link_id not in answers:
                continue
            entry["answer"] = [_answer(item, answers[item.link_id])]
            out.append(entry)
        return out

    r = view.response
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": str(r.id),
        "questionnaire": f"{view.definition.resource.get('url')}|{r.questionnaire_version}",
        "status": str(r.status),
        "subject": {"reference": f"Patient/{r.patient_id}"},
        "authored": (r.completed_at or r.updated_at).isoformat(),
        "item": items(view.definition.items),
    }
    return resource


def score_fhir(score: QuestionnaireScore) -> dict[str, Any]:
    """The total as an Observation (US Core Observation Screening Assessment shape), derivedFrom the QR."""
    return {
        "resourceType": "Observation",
        "id": f"qscore-{score.id}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": score.loinc}]},
        "subject": {"reference": f"Patient/{score.patient_id}"},
        "effectiveDateTime": score.effective_at.isoformat(),
        "valueQuantity": {"value": score.value, "system": "http://unitsofmeasure.org", "code": "{score}"},
        "interpretation": [{"text": score.band}],
        "derivedFrom": [{"reference": f"QuestionnaireResponse/{score.response_id}"}],
    }


async def export_questionnaires(
    session: AsyncSession, principal: Principal, patient_id: int
) -> dict[str, Any]:
    """The patient's responses (FHIR QuestionnaireResponse) and scores for the compartment export."""
    rows = (
        (
            await session.execute(
                select(QuestionnaireAnswerSet)
                .where(QuestionnaireAnswerSet.patient_id == patient_id)
                .order_by(QuestionnaireAnswerSet.id)
            )
        )
        .scalars()
        .all()
    )
    scores = (
        (await session.execute(select(QuestionnaireScore).where(QuestionnaireScore.patient_id == patient_id)))
        .scalars()
        .all()
    )
    lib = engine.library()
    responses = []
    for r in rows:
        if r.questionnaire in lib:
            responses.append(to_fhir(ResponseView(r, lib[r.questionnaire], None, [])))
    return {"questionnaire_responses": responses, "questionnaire_scores": [score_fhir(s) for s in scores]}
