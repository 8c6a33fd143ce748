"""Store-and-forward dermatology actions: a patient (portal) or a clinician submits a skin concern with at
least two photos, a body site and a short history; a dermatologist of the organization's dermatology queue
reviews it beside earlier photos of the same site and answers with an assessment and plan, a request for
more photos, or a conversion to a video or in-person visit (docs/dermatology.md#workflow).

Every action is `(session, principal, *, ...)`, authorises through the policy (`open_patient` on the
case's patient, audited), writes, and publishes `dermatology.case` (ids only) after commit. Photos are
checked for resolution and sharpness before anything is stored (docs/dermatology.md#photo-checks)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telecare.access import rules as access_rules
from telecare.access import service as access
from telecare.access.policy import Action, Resource
from telecare.access.service import ReachOf
from telecare.auth.principal import Principal
from telecare.core.db import as_uow
from telecare.core.errors import Conflict, FieldError, Forbidden, NotFound, ValidationFailed
from telecare.core.time import utc_now
from telecare.dermatology.models import BodySite, PhotoRole, SkinCase, SkinCaseStatus, SkinOutcome, SkinPhoto
from telecare.econsult import service as econsult
from telecare.files import content
from telecare.files import service as files
from telecare.identity.models import Patient, User
from telecare.messaging import rules as messaging_rules
from telecare.messaging import service as messaging
from telecare.notifications import service as notifications

TOPIC = "dermatology.case"
SPECIALTY = "dermatology"  # the e-consult queue whose members are the organization's dermatologists
# Photo checks (docs/dermatology.md#photo-checks): the short edge of the decoded photo, and the variance of
# the Laplacian at 512 px (files.content.sharpness). 600 px keeps a lesion of a few millimetres, framed to
# fill a third of a close-up, at 200 px or more; the sharpness floor sits between a detailed sharp pattern
# (~200-1400) and the same pattern blurred with a Gaussian of radius 4 (< 10), calibrated in
# tests/dermatology/test_photos.py.
MIN_SHORT_EDGE = 600
MIN_SHARPNESS = 25.0
MAX_EXTRA_PHOTOS = 4
MAX_TEXT = 4_000
DUE_BUSINESS_DAYS = 2  # the answer target (docs/dermatology.md#queue)
OPEN = (SkinCaseStatus.SUBMITTED, SkinCaseStatus.IN_REVIEW, SkinCaseStatus.MORE_PHOTOS_REQUESTED)
BLURRED = "This photo looks blurred. Please retake it in good light, holding the phone steady."
TOO_SMALL = (
    f"This photo is too small (under {MIN_SHORT_EDGE} pixels on its short side). "
    "Please retake it with the phone's camera, not a screenshot or a thumbnail."
)


class SkinCaseNotFound(NotFound):
    """The case does not exist or is outside the caller's reach (no existence oracle)."""

    code = "skin_case_not_found"
    title = "Skin concern not found"


class NotADermatologist(Forbidden):
    """Only members of the organization's dermatology queue review and answer skin cases."""

    code = "not_a_dermatologist"
    title = "Not a dermatologist of this organization"


class SkinCaseStateConflict(Conflict):
    code = "skin_case_state"
    title = "The skin concern is not in a state that allows this"


class PhotoRejected(ValidationFailed):
    """A photo is too small or too blurred to assess; `errors` names the field and asks for a retake."""

    code = "photo_rejected"
    title = "Please retake the photo"


@dataclass
class PhotoUpload:
    """One photo as received, with its role on the case and the form field it came in."""

    role: PhotoRole
    field: str
    upload: messaging.Upload


@dataclass
class _Checked:
    photo: PhotoUpload
    width: int
    height: int
    sharpness: float


@dataclass
class EarlierCase:
    case: SkinCase
    photos: list[SkinPhoto]


@dataclass
class SkinCaseView:
    case: SkinCase
    photos: list[SkinPhoto]
    earlier: list[EarlierCase]
    names: dict[int, str]
    patient_name: str
    mrn: str
    is_dermatologist: bool
    is_patient: bool
    can_add_photos: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---- the dermatology queue ---------------------------------------------------------------------------


def _dermatology_queue_of(user_id: Any, org_id: Any) -> Any:
    return econsult.specialty_membership(user_id, org_id, SPECIALTY)


def queue_patients(reach: ReachOf) -> Select[int]:
    """A care relationship: dermatologists (members of the organization's dermatology queue) reach the
    patients of cases waiting in the queue that nobody has taken, and the reviewer those of the cases they
    took or answered (docs/dermatology.md#queue). `reach`'s ids may be bind params."""
    return select(SkinCase.patient_id).where(
        SkinCase.org_id == reach.org_id,
        or_(
            SkinCase.reviewer_user_id == reach.user_id,
            and_(
                SkinCase.reviewer_user_id.is_(None),
                SkinCase.status == SkinCaseStatus.SUBMITTED,
                exists(_dermatology_queue_of(reach.user_id, reach.org_id)),
            ),
        ),
    )


async def is_dermatologist(session: AsyncSession, principal: Principal) -> bool:
    """The caller is a member of the organization's (active) dermatology e-consult queue."""
    if not access_rules.has_clinical_role(principal):
        return False
    row = await session.execute(_dermatology_queue_of(principal.user_id, principal.org_id).limit(1))
    return row.first() is not None


async def _require_dermatologist(session: AsyncSession, principal: Principal) -> None:
    if not await is_dermatologist(session, principal):
        raise NotADermatologist()


def _require_status(case: SkinCase, *allowed: SkinCaseStatus) -> None:
    if case.status not in allowed:
        raise SkinCaseStateConflict(f"The skin concern is {case.status}.")


# ---- photo checks ------------------------------------------------------------------------------------


def _check_photo(photo: PhotoUpload, max_bytes: int, max_pixels: int, max_edge: int) -> _Checked:
    """Content check (type, size, pixels: the files domain's rules) and then the quality bar; raises with
    the field named. CPU work on untrusted input: run in a worker thread."""
    checked = content.check_upload(
        photo.upload.data,
        field=photo.field,
        accept=files.IMAGES_ONLY,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        max_edge=max_edge,
    )
    # Measured on what is stored and shown (upright, at most `max_edge` on the long side): what the
    # dermatologist will see.
    measured = content.sharpness(checked.data)
    if min(measured.width, measured.height) < MIN_SHORT_EDGE:
        raise PhotoRejected(TOO_SMALL, errors=[FieldError(photo.field, TOO_SMALL)])
    if measured.score < MIN_SHARPNESS:
        raise PhotoRejected(BLURRED, errors=[FieldError(photo.field, BLURRED)])
    return _Checked(photo, measured.width, measured.height, round(measured.score, 1))


async def _check_photos(session: AsyncSession, photos: list[PhotoUpload]) -> list[_Checked]:
    settings = as_uow(session).settings
    out = []
    for photo in photos:
        out.append(
            await asyncio.to_thread(
                _check_photo,
                photo,
                settings.max_upload_bytes,
                settings.image_max_pixels,
                settings.image_max_edge,
            )
        )
    return out


async def _store_photos(
    session: AsyncSession, principal: Principal, case: SkinCase, checked: list[_Checked]
) -> list[SkinPhoto]:
    now = utc_now()
    stored = []
    for c in checked:
        row = await files.store_upload(
            session,
            principal,
            patient_id=case.patient_id,
            data=c.photo.upload.data,
            declared_name=c.photo.upload.filename,
            field=c.photo.field,
            accept=files.IMAGES_ONLY,
            owner_kind="skin_case",
            owner_id=case.id,
        )
        photo = SkinPhoto(
            org_id=case.org_id,
            case_id=case.id,
            file_id=row.id,
            role=c.photo.role,
            width=row.width or c.width,
            height=row.height or c.height,
            sharpness=c.sharpness,
            taken_at=now,
        )
        session.add(photo)
        stored.append(photo)
    await session.flush()
    return stored


# ---- submitting --------------------------------------------------------------------------------------


def _history_errors(body_site: str, duration: str, symptoms: str, prior_treatment: str) -> list[FieldError]:
    errors = []
    if body_site not in {str(b) for b in BodySite}:
        errors.append(FieldError("body_site", "choose where on the body"))
    if not duration.strip():
        errors.append(FieldError("duration", "say how long you have had it"))
    elif len(duration) > 200:
        errors.append(FieldError("duration", "at most 200 characters"))
    for name, text in (("symptoms", symptoms), ("prior_treatment", prior_treatment)):
        if len(text) > MAX_TEXT:
            errors.append(FieldError(name, f"at most {MAX_TEXT} characters"))
    return errors


async def submit_case(
    session: AsyncSession,
    principal: Principal,
    *,
    patient_id: int | None,
    body_site: str,
    duration: str,
    changing: bool,
    symptoms: str,
    prior_treatment: str,
    photos: list[PhotoUpload],
    idempotency_key: str | None = None,
) -> tuple[SkinCase, bool]:
    """A patient (their own concern) or a clinician caring for the patient submits a skin concern: a close-up
    and a wider context photo at least, the body site and a short history. Returns (case, created): a retry
    with the same Idempotency-Key returns the first submission. A refused photo stores nothing."""
    if patient_id is None and access_rules.is_patient(principal):
        patient_id = principal.patient_id
    if patient_id is None:
        raise ValidationFailed("Say whose concern this is.", errors=[FieldError("patient_id", "required")])
    if idempotency_key:
        existing = (
            await session.execute(
                select(SkinCase).where(
                    SkinCase.submitted_by_user_id == principal.user_id,
                    SkinCase.idempotency_key == idempotency_key,
                )
            )
        ).scalar_one_or_none()
        if existing is not None:
            await access.open_patient(
                session,
                principal,
                existing.patient_id,
                resource=Resource.SKIN_CASE,
                action=Action.CREATE,
                resource_id=existing.id,
            )
            return existing, False
    await access.open_patient(
        session, principal, patient_id, resource=Resource.SKIN_CASE, action=Action.CREATE
    )
    errors = _history_errors(body_site, duration, symptoms, prior_treatment)
    roles = [p.role for p in photos]
    if PhotoRole.CLOSE_UP not in roles:
        errors.append(FieldError("close_up", "add a close-up photo of the skin"))
    if PhotoRole.CONTEXT not in roles:
        errors.append(FieldError("context", "add a wider photo that shows where on the body it is"))
    if roles.count(PhotoRole.EXTRA) > MAX_EXTRA_PHOTOS:
        errors.append(FieldError("extra", f"at most {MAX_EXTRA_PHOTOS} extra photos"))
    if errors:
        raise ValidationFailed("The skin concern is not complete.", errors=errors)
    checked = await _check_photos(session, photos)
    now = utc_now()
    calendar = await messaging.org_calendar(session, principal.org_id)
    case = SkinCase(
        org_id=principal.org_id,
        patient_id=patient_id,
        submitted_by_user_id=principal.user_id,
        body_site=BodySite(body_site),
        duration=duration.strip(),
        changing=changing,
        symptoms=symptoms.strip(),
        prior_treatment=prior_treatment.strip(),
        status=SkinCaseStatus.SUBMITTED,
        due_at=messaging_rules.due_at(calendar, now, DUE_BUSINESS_DAYS),
        created_at=now,
        idempotency_key=idempotency_key or None,
    )
    try:
        async with session.begin_nested():
            session.add(case)
            await session.flush()
    except IntegrityError:  # the same key raced in from a concurrent retry: answer with the one that won
        return await submit_case(
            session,
            principal,
            patient_id=patient_id,
            body_site=body_site,
            duration=duration,
            changing=changing,
            symptoms=symptoms,
            prior_treatment=prior_treatment,
            photos=photos,
            idempotency_key=idempotency_key,
        )
    stored = await _store_photos(session, principal, case, checked)
    await _audit(session, principal, case, Action.CREATE, {"photos": len(stored), "body_site": body_site})
    _publish(session, case, "submitted")
    return case, True


async def add_photos(
    session: AsyncSession, principal: Principal, *, case_id: int, photos: list[PhotoUpload]
) -> list[SkinPhoto]:
    """More photos on an open case (the patient, or a clinician caring for them). When the dermatologist
    asked for them, the case goes back to that dermatologist (in review)."""
    case = await _case(session, principal, case_id, Action.UPDATE)
    _require_status(case, *OPEN)
    if not photos:
        raise ValidationFailed("Add a photo.", errors=[FieldError("extra", "add at least one photo")])
    if len(photos) > MAX_EXTRA_PHOTOS + 2:
        raise ValidationFailed("Too many photos.", errors=[FieldError("extra", "at most 6 at a time")])
    checked = await _check_photos(session, photos)
    stored = await _store_photos(session, principal, case, checked)
    if case.status == SkinCaseStatus.MORE_PHOTOS_REQUESTED:
        case.status = SkinCaseStatus.IN_REVIEW if case.reviewer_user_id else SkinCaseStatus.SUBMITTED
    await session.flush()
    await _audit(session, principal, case, Action.UPDATE, {"photos_added": len(stored)})
    _publish(session, case, "photos")
    return stored


# ---- reviewing and answering ----------------------------------------------------------------------------


async def start_review(session: AsyncSession, principal: Principal, *, case_id: int) -> SkinCase:
    """A dermatologist takes a submitted case: it leaves the others' queue (docs/dermatology.md#queue)."""
    case = await _case(session, principal, case_id, Action.UPDATE)
    await _require_dermatologist(session, principal)
    _require_status(case, SkinCaseStatus.SUBMITTED)
    case.status, case.reviewer_user_id, case.review_started_at = (
        SkinCaseStatus.IN_REVIEW,
        principal.user_id,
        utc_now(),
    )
    await session.flush()
    await _audit(session, principal, case, Action.UPDATE, {"status": str(case.status)})
    _publish(session, case, "in_review")
    return case


async def answer_case(
    session: AsyncSession,
    principal: Principal,
    *,
    case_id: int,
    outcome: SkinOutcome,
    assessment: str = "",
    plan: str = "",
) -> SkinCase:
    """The dermatologist's answer (docs/dermatology.md#answers): an assessment and plan; a request for more
    photos (`plan` says which); or a conversion to a video or in-person visit (`plan` says why). The patient
    is notified that there is news, never what it is."""
    case = await _case(session, principal, case_id, Action.UPDATE)
    await _require_dermatologist(session, principal)
    _require_status(case, *OPEN)
    if case.reviewer_user_id not in (None, principal.user_id):
        raise SkinCaseStateConflict("Another dermatologist is reviewing this skin concern.")
    errors = []
    if outcome is SkinOutcome.ASSESSMENT_PLAN and not assessment.strip():
        errors.append(FieldError("assessment", "required"))
    if not plan.strip():
        errors.append(
            FieldError(
                "plan", "say which photos you need" if outcome is SkinOutcome.MORE_PHOTOS else "required"
            )
        )
    if len(assessment) > MAX_TEXT or len(plan) > MAX_TEXT:
        errors.append(FieldError("assessment" if len(assessment) > MAX_TEXT else "plan", f"<= {MAX_TEXT}"))
    if errors:
        raise ValidationFailed("The answer is not complete.", errors=errors)
    now = utc_now()
    case.reviewer_user_id = principal.user_id
    case.review_started_at = case.review_started_at or now
    case.outcome, case.assessment, case.plan = outcome, assessment.strip() or None, plan.strip()
    if outcome is SkinOutcome.MORE_PHOTOS:
        case.status, case.photos_requested_at = SkinCaseStatus.MORE_PHOTOS_REQUESTED, now
    else:
        case.status = (
            SkinCaseStatus.ANSWERED if outcome is SkinOutcome.ASSESSMENT_PLAN else SkinCaseStatus.CONVERTED
        )
        case.answered_at = now
    await session.flush()
    await _audit(
        session, principal, case, Action.UPDATE, {"status": str(case.status), "outcome": str(outcome)}
    )
    await _notify(session, case)
    _publish(session, case, str(case.status))
    return case


async def _notify(session: AsyncSession, case: SkinCase) -> None:
    """In-app and email: there is news, with a link; never the content, the site or the answer
    (docs/dermatology.md#answers). A clinician who submitted for the patient is told too."""
    patient = await session.get(Patient, case.patient_id)
    recipients: list[tuple[int, str | None, str]] = []
    if patient is not None and patient.user_id is not None:
        user = await session.get(User, patient.user_id)
        email = (user.email if user is not None else None) or patient.email
        recipients.append((patient.user_id, email, "There is news about your skin concern"))
    if patient is None or case.submitted_by_user_id != patient.user_id:
        submitter = await session.get(User, case.submitted_by_user_id)
        if submitter is not None:
            recipients.append((submitter.id, submitter.email, "A skin concern you sent has news"))
    for user_id, email, subject in recipients:
        await notifications.notify(
            session,
            org_id=case.org_id,
            kind="skin_case",
            subject=subject,
            body="Sign in to Telecare to see it.\nDo not reply to this email.",
            recipient_user_id=user_id,
            recipient_email=email,
            link=f"/skin/{case.id}",
        )


# ---- reading ---------------------------------------------------------------------------------------------


async def _case(session: AsyncSession, principal: Principal, case_id: int, action: Action) -> SkinCase:
    return await access.open_patient_record(
        session,
        principal,
        SkinCase,
        case_id,
        resource=Resource.SKIN_CASE,
        action=action,
        not_found=SkinCaseNotFound,
    )


async def _photos_of(session: AsyncSession, case_ids: list[int]) -> dict[int, list[SkinPhoto]]:
    if not case_ids:
        return {}
    rows = (
        await session.execute(select(SkinPhoto).where(SkinPhoto.case_id.in_(case_ids)).order_by(SkinPhoto.id))
    ).scalars()
    out: dict[int, list[SkinPhoto]] = {}
    for p in rows:
        out.setdefault(p.case_id, []).append(p)
    return out


async def view_case(session: AsyncSession, principal: Principal, *, case_id: int) -> SkinCaseView:
    """The case with its photos and, for comparison, the earlier cases of the same patient and body site
    with theirs (docs/dermatology.md#viewer)."""
    case = await _case(session, principal, case_id, Action.READ)
    earlier_cases = list(
        (
            await session.execute(
                select(SkinCase)
                .where(
                    SkinCase.patient_id == case.patient_id,
                    SkinCase.body_site == case.body_site,
                    SkinCase.id != case.id,
                    SkinCase.created_at <= case.created_at,
                )
                .order_by(SkinCase.created_at.desc(), SkinCase.id.desc())
                .limit(10)
            )
        ).scalars()
    )
    photos = await _photos_of(session, [case.id, *(c.id for c in earlier_cases)])
    from telecare.messaging import repository as messaging_repo

    people = {case.submitted_by_user_id, *(u for u in (case.reviewer_user_id,) if u)}
    names = await messaging_repo.user_names(session, people)
    name, mrn = (await messaging_repo.patient_names(session, {case.patient_id})).get(
        case.patient_id, ("", "")
    )
    is_patient = access_rules.is_the_patient(principal, patient_id=case.patient_id)
    return SkinCaseView(
        case,
        photos.get(case.id, []),
        [EarlierCase(c, photos.get(c.id, [])) for c in earlier_cases],
        names,
        name,
        mrn,
        await is_dermatologist(session, principal),
        is_patient,
        can_add_photos=case.status in OPEN,
    )


@dataclass
class SkinCaseRow:
    id: int
    patient_id: int
    patient_name: str
    body_site: str
    status: str
    changing: bool
    submitted_by_user_id: int
    reviewer_user_id: int | None
    created_at: datetime
    due_at: datetime
    answered_at: datetime | None
    overdue: bool


async def list_cases(
    session: AsyncSession,
    principal: Principal,
    *,
    view: str = "mine",
    patient_id: int | None = None,
) -> list[SkinCaseRow]:
    """`mine`: for a patient their own cases, for a clinician the cases they submitted; `queue`: the open
    cases of the dermatology queue that are untaken or taken by the caller (dermatologists only, soonest due
    first); with `patient_id`: that patient's cases (the chart). Audited per patient returned."""
    if view not in ("queue", "mine"):
        raise ValidationFailed("Unknown view.", errors=[FieldError("view", "queue or mine")])
    scope = access.patient_scope(principal, Resource.SKIN_CASE, Action.SEARCH)
    stmt = select(SkinCase).where(
        SkinCase.org_id == principal.org_id, SkinCase.patient_id.in_(scope.scalar_subquery())
    )
    if patient_id is not None:
        stmt = stmt.where(SkinCase.patient_id == patient_id).order_by(SkinCase.id.desc())
    elif view == "queue":
        if not await is_dermatologist(session, principal):
            return []
        stmt = stmt.where(
            SkinCase.status.in_(OPEN),
            or_(SkinCase.reviewer_user_id.is_(None), SkinCase.reviewer_user_id == principal.user_id),
        ).order_by(SkinCase.due_at, SkinCase.id)
    elif not access_rules.is_patient(principal):
        stmt = stmt.where(SkinCase.submitted_by_user_id == principal.user_id).order_by(SkinCase.id.desc())
    else:
        stmt = stmt.order_by(SkinCase.id.desc())
    cases = list((await session.execute(stmt.limit(500))).scalars())
    from telecare.messaging import repository as messaging_repo

    patients = await messaging_repo.patient_names(session, {c.patient_id for c in cases})
    await access.record_search(
        session,
        principal,
        resource=Resource.SKIN_CASE,
        patient_ids=[c.patient_id for c in cases],
        query={"view": view, "patient_id": patient_id},
    )
    now = utc_now()
    return [
        SkinCaseRow(
            id=c.id,
            patient_id=c.patient_id,
            patient_name=patients.get(c.patient_id, ("", ""))[0],
            body_site=str(c.body_site),
            status=str(c.status),
            changing=c.changing,
            submitted_by_user_id=c.submitted_by_user_id,
            reviewer_user_id=c.reviewer_user_id,
            created_at=c.created_at,
            due_at=c.due_at,
            answered_at=c.answered_at,
            overdue=c.status in OPEN and c.due_at < now,
        )
        for c in cases
    ]


async def export_skin_cases(session: AsyncSession, principal: Principal, patient_id: int) -> dict[str, Any]:
    """The patient's skin cases for the compartment export (identity.service.export_patient audits it): each
    answered case is the documentation of an asynchronous encounter (docs/dermatology.md#documentation)."""
    cases = list(
        (
            await session.execute(
                select(SkinCase).where(SkinCase.patient_id == patient_id).order_by(SkinCase.id)
            )
        )
        .scalars()
        .all()
    )
    photos = await _photos_of(session, [c.id for c in cases])
    from telecare.messaging import repository as messaging_repo

    names = await messaging_repo.user_names(
        session, {c.reviewer_user_id for c in cases if c.reviewer_user_id}
    )
    return {
        "skin_cases": [
            {
                "id": c.id,
                "modality": "asynchronous (store-and-forward)",
                "body_site": str(c.body_site),
                "duration": c.duration,
                "changing": c.changing,
                "symptoms": c.symptoms,
                "prior_treatment": c.prior_treatment,
                "status": str(c.status),
                "submitted_at": c.created_at.isoformat(),
                "outcome": str(c.outcome) if c.outcome else None,
                "assessment": c.assessment,
                "plan": c.plan,
                "reviewer_user_id": c.reviewer_user_id,
                "reviewer_name": names.get(c.reviewer_user_id, "") if c.reviewer_user_id else None,
                "review_started_at": c.review_started_at.isoformat() if c.review_started_at else None,
                "answered_at": c.answered_at.isoformat() if c.answered_at else None,
                "photos": [
                    {"file_id": p.file_id, "role": str(p.role), "taken_at": p.taken_at.isoformat()}
                    for p in photos.get(c.id, [])
                ],
            }
            for c in cases
        ]
    }


async def _audit(
    session: AsyncSession, principal: Principal, case: SkinCase, action: Action, detail: dict[str, Any]
) -> None:
    await access.record_access(
        session,
        principal,
        resource=Resource.SKIN_CASE,
        action=action,
        patient_id=case.patient_id,
        resource_id=case.id,
        detail=detail,
    )


def _publish(session: AsyncSession, case: SkinCase, change: str) -> None:
    as_uow(session).publish(TOPIC, {"case_id": case.id, "patient_id": case.patient_id, "change": change})
