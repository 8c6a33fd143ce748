"""Triage actions: start an encounter (the patient's location first), save answers (an emergency red flag
ends the questions at once), sign the SBAR note, read and list encounters, and the export
(docs/triage.md#nurse-triage, #self-triage).

Every action is `(session, principal, *, ...)`, authorises through the policy (Resource TRIAGE, audited)
and publishes `triage.changed` (ids only) after commit. A nurse or physician triages a patient in their
care; a patient triages themselves before booking. Acting on the disposition happens in the same
transaction as the answer that reached it: a positive answer on the self-harm protocol raises the care
team's stat task (docs/triage.md#self-harm), and a nurse's non-emergency outcome attaches the library's
articles for that condition and disposition (docs/education.md#assignments)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
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
from telecare.education import service as education
from telecare.education.library import Article
from telecare.identity.geo import US_STATES
from telecare.identity.models import Role
from telecare.triage import engine
from telecare.triage.models import TriageEncounter, TriageMode, TriageStatus

TOPIC = "triage.changed"
TR = Resource.TRIAGE
# Who may run a nurse triage: registered nurses and physicians (STCC's authors advise that MAs and LPNs
# should not triage; docs/triage.md#nurse-triage).
TRIAGERS = frozenset({Role.NURSE, Role.PHYSICIAN})
# The condition (education topic) each starter protocol is about, for the articles a nurse's outcome
# attaches; an organization's own protocol of another id attaches none.
PROTOCOL_TOPICS = {
    "adult-fever": "fever",
    "chest-pain": "chest-pain",
    "high-blood-pressure": "hypertension",
    "low-blood-sugar": "hypoglycemia",
    "rash": "rash",
    "medication-question": "medication",
    "self-harm": "depression",
    "shortness-of-breath": "dyspnea",
}
SELF_HARM_TASK_KIND = "triage-self-harm"
SELF_HARM_ACK_WITHIN = timedelta(hours=1)
SBAR_PARTS = ("situation", "background", "assessment", "recommendation")
SBAR_MAX = 4000


class EncounterNotFound(NotFound):
    code = "triage_encounter_not_found"
    title = "Triage encounter not found"


class ProtocolNotFound(NotFound):
    code = "triage_protocol_not_found"
    title = "Triage protocol not found"


class EncounterCompleted(Conflict):
    code = "triage_encounter_completed"
    title = "This triage is complete"


class NotATriager(Forbidden):
    code = "triage_nurses_only"
    title = "Nurse triage is for registered nurses and physicians"


def protocols(session: AsyncSession) -> dict[str, engine.Protocol]:
    return engine.library(as_uow(session).settings.triage_protocol_dir)


def protocol(session: AsyncSession, protocol_id: str) -> engine.Protocol:
    found = protocols(session).get(protocol_id)
    if found is None:
        raise ProtocolNotFound(f"No triage protocol {protocol_id!r}.")
    return found


def _publish(session: AsyncSession, row: TriageEncounter, change: str) -> None:
    as_uow(session).publish(TOPIC, {"patient_id": row.patient_id, "id": row.id, "change": change})


async def start_encounter(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int,
    protocol_id: str,
    location_state: str,
    location_detail: str = "",
    callback_phone: str = "",
) -> TriageEncounter:
    """Start a triage: a nurse or physician for a patient in their care (mode nurse), or the patient for
    themselves (mode self). Where the patient is now comes first and is required: the state always (an
    emergency call and licensure depend on it), and in a nurse's triage the address or landmarks too."""
    await access.open_patient(
        session, principal, patient_id, resource=TR, action=Action.CREATE, audit_access=False
    )
    is_patient = access_rules.is_patient(principal)
    if not is_patient and principal.role not in TRIAGERS:
        raise NotATriager()
    errors = []
    if protocol_id not in protocols(session):
        errors.append(FieldError("protocol", f"one of {sorted(protocols(session))}"))
    state = location_state.strip().upper()
    if state not in US_STATES:
        errors.append(FieldError("location_state", "the two-letter code of the state the patient is in now"))
    detail = location_detail.strip()
    if not is_patient and not detail:
        errors.append(FieldError("location_detail", "where the patient is now: address or landmarks"))
    if len(detail) > 500:
        errors.append(FieldError("location_detail", "at most 500 characters"))
    phone = callback_phone.strip()
    if len(phone) > 40:
        errors.append(FieldError("callback_phone", "at most 40 characters"))
    if errors:
        raise ValidationFailed("The triage cannot start.", errors=errors)
    found = protocol(session, protocol_id)
    row = TriageEncounter(
        org_id=principal.org_id,
        patient_id=patient_id,
        mode=TriageMode.SELF if is_patient else TriageMode.NURSE,
        protocol_id=found.id,
        protocol_version=found.version,
        started_by_user_id=principal.user_id,
        started_at=utc_now(),
        location_state=state,
        location_detail=detail,
        callback_phone=phone,
        status=TriageStatus.IN_PROGRESS,
        answers={},
        red_flags=[],
        sbar={},
    )
    session.add(row)
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=TR,
        action=Action.CREATE,
        patient_id=patient_id,
        resource_id=row.id,
        detail={"protocol": found.id, "mode": str(row.mode)},
    )
    _publish(session, row, "started")
    return row


@dataclass
class AnswerResult:
    encounter: TriageEncounter
    result: engine.Result
    missing: list[str]  # questions still unanswered (empty once complete)
    articles: list[Article]


async def save_answers(
    session: AsyncSession, principal: Principal, *, encounter_id: int, answers: dict[str, str]
) -> AnswerResult:
    """Merge `answers` (question id -> answer id) and evaluate. An answer that reaches an emergency
    disposition completes the encounter at once, whatever is still unanswered: virtual care stops and the
    emergency instructions show. Otherwise the encounter completes when every question is answered. An
    unknown question or answer is refused (422 naming `answers.<id>`) and nothing is saved."""
    row = await access.open_patient_record(
        session,
        principal,
        TriageEncounter,
        encounter_id,
        resource=TR,
        action=Action.UPDATE,
        not_found=EncounterNotFound,
    )
    if row.status == TriageStatus.COMPLETED:
        raise EncounterCompleted("This triage is complete; start a new one to triage again.")
    found = protocol(session, row.protocol_id)
    problems = {
        k: v
        for k, v in engine.check_answers(found, answers).items()
        if v != "answer required" or k in answers
    }
    if problems:
        raise ValidationFailed(
            "Some answers do not fit the protocol.",
            errors=[FieldError(f"answers.{k}", v) for k, v in sorted(problems.items())],
        )
    merged = {**(row.answers or {}), **{k: v for k, v in answers.items() if v}}
    row.answers = merged
    result = engine.evaluate(found, merged)
    missing = [q.id for q in found.questions if q.id not in merged]
    row.disposition = result.disposition
    row.red_flags = [rf.id for rf in result.red_flags]
    articles: list[Article] = []
    if found.self_harm and result.red_flags:
        await _raise_self_harm(session, principal, row, result)
    if result.emergency or not missing:
        row.status = TriageStatus.COMPLETED
        row.completed_at = utc_now()
        missing = []
        if row.mode == TriageMode.NURSE:
            row.sbar = draft_sbar(row, found, result)
        articles = suggested_articles(row.protocol_id, result.disposition)
        if row.mode == TriageMode.NURSE and not result.emergency:
            for a in articles:
                await education.assign_article(
                    session,
                    principal,
                    patient_id=row.patient_id,
                    slug=a.slug,
                    note=f"From your triage call about {found.title.lower()}.",
                    source_kind="triage",
                    source_id=str(row.id),
                )
    await session.flush()
    done = row.status == TriageStatus.COMPLETED
    await access.record_access(
        session,
        principal,
        resource=TR,
        action=Action.UPDATE,
        patient_id=row.patient_id,
        resource_id=row.id,
        detail={
            "answered": sorted(answers),
            "completed": done,
            "disposition": row.disposition if done else None,
        },
    )
    _publish(session, row, "completed" if done else "answered")
    return AnswerResult(row, result, missing, articles)


async def _raise_self_harm(
    session: AsyncSession, principal: Principal, row: TriageEncounter, result: engine.Result
) -> None:
    """docs/triage.md#self-harm: a positive answer raises one stat task per encounter, like PHQ-9 item 9."""
    await caretasks.raise_task(
        session,
        principal,
        patient_id=row.patient_id,
        kind=SELF_HARM_TASK_KIND,
        title="Thoughts of self-harm reported in triage: contact the patient now",
        detail="Red flags: "
        + "; ".join(rf.label for rf in result.red_flags)
        + f". Patient is in {row.location_state}"
        + (f" ({row.location_detail})" if row.location_detail else "")
        + (f"; call back on {row.callback_phone}" if row.callback_phone else "")
        + ".",
        priority="stat",
        due_within=SELF_HARM_ACK_WITHIN,
        source_kind="TriageEncounter",
        source_id=str(row.id),
        assignee_user_id=principal.user_id if row.mode == TriageMode.NURSE else None,
    )


def suggested_articles(protocol_id: str, disposition: str) -> list[Article]:
    """Library articles about the protocol's condition tagged with the disposition reached (none for an
    emergency: nothing should delay acting on it)."""
    if disposition in engine.EMERGENCY:
        return []
    topic = PROTOCOL_TOPICS.get(protocol_id)
    return education.articles(topic=topic, disposition=disposition) if topic else []


def draft_sbar(row: TriageEncounter, found: engine.Protocol, result: engine.Result) -> dict[str, str]:
    """The SBAR draft (docs/triage.md#sbar) from the location, the answers and the outcome; the nurse edits
    it and signs."""
    where = f"in {US_STATES.get(row.location_state, row.location_state)}" + (
        f" ({row.location_detail})" if row.location_detail else ""
    )
    answered = []
    for q in found.questions:
        chosen = q.answer(str((row.answers or {}).get(q.id, "")))
        if chosen is not None:
            answered.append(f"{q.text} {chosen.text}.")
    flags = "; ".join(rf.label for rf in result.red_flags)
    return {
        "situation": f"Triage for {found.title.lower()}. Patient is {where}."
        + (f" Call-back number {row.callback_phone}." if row.callback_phone else ""),
        "background": f"Protocol {found.title} version {found.version} ({found.label}).",
        "assessment": " ".join(answered) + (f" Red flags: {flags}." if flags else " No red flags."),
        "recommendation": engine.DISPOSITIONS[result.disposition] + ".",
    }


async def sign_sbar(
    session: AsyncSession, principal: Principal, *, encounter_id: int, sbar: dict[str, str]
) -> TriageEncounter:
    """The nurse who triaged (or a physician) edits and signs the SBAR note of a completed nurse triage;
    a signed note is final."""
    row = await access.open_patient_record(
        session,
        principal,
        TriageEncounter,
        encounter_id,
        resource=TR,
        action=Action.UPDATE,
        not_found=EncounterNotFound,
    )
    if principal.role not in TRIAGERS:
        raise NotATriager()
    if row.mode != TriageMode.NURSE or row.status != TriageStatus.COMPLETED:
        raise Conflict("Only a completed nurse triage has an SBAR note to sign.")
    if row.signed_at is not None:
        raise EncounterCompleted("The SBAR note is signed.")
    errors = [FieldError(f"sbar.{k}", "not an SBAR part") for k in sbar if k not in SBAR_PARTS]
    note = {
        k: (sbar.get(k) if sbar.get(k) is not None else (row.sbar or {}).get(k, "")) or "" for k in SBAR_PARTS
    }
    errors += [FieldError(f"sbar.{k}", "required") for k in SBAR_PARTS if not note[k].strip()]
    errors += [
        FieldError(f"sbar.{k}", f"at most {SBAR_MAX} characters")
        for k in SBAR_PARTS
        if len(note[k]) > SBAR_MAX
    ]
    if errors:
        raise ValidationFailed("The SBAR note is not complete.", errors=errors)
    row.sbar = {k: note[k].strip() for k in SBAR_PARTS}
    row.signed_at = utc_now()
    row.signed_by_user_id = principal.user_id
    await session.flush()
    await access.record_access(
        session,
        principal,
        resource=TR,
        action=Action.UPDATE,
        patient_id=row.patient_id,
        resource_id=row.id,
        detail={"signed": True},
    )
    _publish(session, row, "signed")
    return row


async def get_encounter(session: AsyncSession, principal: Principal, *, encounter_id: int) -> TriageEncounter:
    return await access.open_patient_record(
        session,
        principal,
        TriageEncounter,
        encounter_id,
        resource=TR,
        action=Action.READ,
        not_found=EncounterNotFound,
    )


async def list_encounters(
    session: AsyncSession, principal: Principal, *, patient_id: int | None = None
) -> list[TriageEncounter]:
    """Encounters of the patients in the caller's reach (a patient: their own), newest first."""
    if access_rules.is_patient(principal):
        patient_id = principal.patient_id if principal.patient_id is not None else -1
    scope = access.patient_scope(principal, TR, Action.SEARCH)
    stmt = select(TriageEncounter).where(
        TriageEncounter.org_id == principal.org_id, TriageEncounter.patient_id.in_(scope.scalar_subquery())
    )
    if patient_id is not None:
        stmt = stmt.where(TriageEncounter.patient_id == patient_id)
    rows = list(
        (
            await session.execute(
                stmt.order_by(TriageEncounter.started_at.desc(), TriageEncounter.id.desc()).limit(200)
            )
        ).scalars()
    )
    await access.record_search(
        session,
        principal,
        resource=TR,
        patient_ids=[r.patient_id for r in rows],
        query={"patient_id": patient_id},
    )
    return rows


def encounter_json(row: TriageEncounter) -> dict[str, Any]:
    return {
        "id": row.id,
        "patient_id": row.patient_id,
        "mode": str(row.mode),
        "protocol": row.protocol_id,
        "protocol_version": row.protocol_version,
        "started_at": row.started_at.isoformat(),
        "location": {
            "state": row.location_state,
            "detail": row.location_detail,
            "callback_phone": row.callback_phone,
        },
        "status": str(row.status),
        "answers": dict(row.answers or {}),
        "disposition": row.disposition,
        "disposition_text": engine.DISPOSITIONS.get(row.disposition or "", None),
        "emergency": (row.disposition in engine.EMERGENCY) if row.status == TriageStatus.COMPLETED else False,
        "red_flags": list(row.red_flags or []),
        "completed_at": row.completed_at.isoformat() if row.completed_at else None,
        "sbar": dict(row.sbar or {}),
        "signed_at": row.signed_at.isoformat() if row.signed_at else None,
        "signed_by_user_id": row.signed_by_user_id,
    }


async def export_triage(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    rows = (
        (
            await session.execute(
                select(TriageEncounter)
                .where(TriageEncounter.patient_id == patient_id)
                .order_by(TriageEncounter.id)
            )
        )
        .scalars()
        .all()
    )
    return {"encounters": [encounter_json(r) for r in rows]}
