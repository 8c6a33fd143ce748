"""REST routes for store-and-forward dermatology (thin: each calls one action in dermatology.service).

A submission is `multipart/form-data`: the history fields, a `close_up` and a `context` photo and up to four
`extra` photos; it honours an `Idempotency-Key` header. Photos download through `/api/v1/files/{id}`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from telecare.auth.dependencies import CurrentPrincipal, DbSession
from telecare.core.params import PathId, QueryId
from telecare.dermatology import service
from telecare.dermatology.models import BodySite, PhotoRole, SkinCase, SkinOutcome, SkinPhoto
from telecare.messaging.api import read_uploads

router = APIRouter(prefix="/api/v1/dermatology", tags=["dermatology"])
Photo = Annotated[UploadFile | None, File(description="A JPEG, PNG or HEIC photo")]
Extras = Annotated[list[UploadFile], File(description="Up to four more photos")]


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: SkinOutcome
    assessment: str = Field(default="", max_length=4_000)
    plan: str = Field(default="", max_length=4_000, description="The plan, the photos needed, or why a visit")


class PhotoRead(BaseModel):
    id: str  # the stored file's id
    role: str
    width: int
    height: int
    sharpness: float
    taken_at: datetime
    url: str


class EarlierRead(BaseModel):
    id: int
    created_at: datetime
    status: str
    photos: list[PhotoRead]


class SkinCaseRead(BaseModel):
    id: int
    patient_id: int
    submitted_by_user_id: int
    body_site: str
    duration: str
    changing: bool
    symptoms: str
    prior_treatment: str
    status: str
    reviewer_user_id: int | None
    outcome: str | None
    assessment: str | None
    plan: str | None
    created_at: datetime
    due_at: datetime
    answered_at: datetime | None
    photos: list[PhotoRead] = []
    earlier: list[EarlierRead] = []


class SkinCaseSummary(BaseModel):
    id: int
    patient_id: int
    body_site: str
    status: str
    changing: bool
    submitted_by_user_id: int
    reviewer_user_id: int | None
    created_at: datetime
    due_at: datetime
    answered_at: datetime | None
    overdue: bool


def photo_read(p: SkinPhoto) -> PhotoRead:
    return PhotoRead(
        id=p.file_id,
        role=str(p.role),
        width=p.width,
        height=p.height,
        sharpness=p.sharpness,
        taken_at=p.taken_at,
        url=f"/api/v1/files/{p.file_id}",
    )


def case_read(c: SkinCase, view: service.SkinCaseView | None = None) -> SkinCaseRead:
    return SkinCaseRead(
        id=c.id,
        patient_id=c.patient_id,
        submitted_by_user_id=c.submitted_by_user_id,
        body_site=str(c.body_site),
        duration=c.duration,
        changing=c.changing,
        symptoms=c.symptoms,
        prior_treatment=c.prior_treatment,
        status=str(c.status),
        reviewer_user_id=c.reviewer_user_id,
        outcome=str(c.outcome) if c.outcome else None,
        assessment=c.assessment,
        plan=c.plan,
        created_at=c.created_at,
        due_at=c.due_at,
        answered_at=c.answered_at,
        photos=[photo_read(p) for p in (view.photos if view else [])],
        earlier=[
            EarlierRead(
                id=e.case.id,
                created_at=e.case.created_at,
                status=str(e.case.status),
                photos=[photo_read(p) for p in e.photos],
            )
            for e in (view.earlier if view else [])
        ],
    )


async def read_photos(
    limit: int, close_up: UploadFile | None, context: UploadFile | None, extra: list[UploadFile]
) -> list[service.PhotoUpload]:
    """The photo parts in order, each with its role and the field that names it in a refusal."""
    out = []
    for role, name, part in (
        (PhotoRole.CLOSE_UP, "close_up", close_up),
        (PhotoRole.CONTEXT, "context", context),
    ):
        if part is not None:
            out += [service.PhotoUpload(role, name, u) for u in await read_uploads([part], limit)]
    for n, upload in enumerate(await read_uploads(extra, limit)):
        out.append(service.PhotoUpload(PhotoRole.EXTRA, f"extra[{n}]", upload))
    return out


@router.get("/cases", response_model=list[SkinCaseSummary])
async def cases(
    session: DbSession,
    principal: CurrentPrincipal,
    view: Annotated[str, Query(pattern="^(queue|mine)$")] = "mine",
    patient_id: QueryId | None = None,
) -> list[SkinCaseSummary]:
    """`mine`: a patient's own skin concerns, or those a clinician submitted; `queue`: the dermatology
    queue's open cases (dermatologists), soonest due first; `patient_id`: that patient's cases."""
    rows = await service.list_cases(session, principal, view=view, patient_id=patient_id)
    return [
        SkinCaseSummary(**{k: v for k, v in r.__dict__.items() if k in SkinCaseSummary.model_fields})
        for r in rows
    ]


@router.post("/cases", response_model=SkinCaseRead, status_code=201)
async def submit(
    session: DbSession,
    principal: CurrentPrincipal,
    body_site: Annotated[BodySite, Form()],
    duration: Annotated[str, Form(max_length=200)],
    close_up: Photo = None,
    context: Photo = None,
    extra: Extras = [],  # noqa: B006
    patient_id: Annotated[int | None, Form(ge=1, le=2_147_483_647)] = None,
    changing: Annotated[bool, Form()] = False,
    symptoms: Annotated[str, Form(max_length=4_000)] = "",
    prior_treatment: Annotated[str, Form(max_length=4_000)] = "",
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Response:
    """Submit a skin concern: a close-up and a wider context photo (each checked for resolution and
    sharpness: a refused photo is a 422 naming its field with a request to retake it), the body site and a
    short history. A patient submits their own; a clinician names `patient_id`."""
    photos = await read_photos(session.settings.max_upload_bytes, close_up, context, extra)
    case, created = await service.submit_case(
        session,
        principal,
        patient_id=patient_id,
        body_site=str(body_site),
        duration=duration,
        changing=changing,
        symptoms=symptoms,
        prior_treatment=prior_treatment,
        photos=photos,
        idempotency_key=idempotency_key,
    )
    view = await service.view_case(session, principal, case_id=case.id)
    body = case_read(case, view)
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=201 if created else 200,
        headers={"Location": f"/api/v1/dermatology/cases/{case.id}"},
    )


@router.get("/cases/{case_id}", response_model=SkinCaseRead)
async def case(case_id: PathId, session: DbSession, principal: CurrentPrincipal) -> SkinCaseRead:
    """The case, its photos and the earlier cases of the same patient and body site with theirs."""
    view = await service.view_case(session, principal, case_id=case_id)
    return case_read(view.case, view)


@router.post("/cases/{case_id}/photos", response_model=list[PhotoRead], status_code=201)
async def add_photos(
    case_id: PathId,
    session: DbSession,
    principal: CurrentPrincipal,
    close_up: Photo = None,
    context: Photo = None,
    extra: Extras = [],  # noqa: B006
) -> list[PhotoRead]:
    """More photos on an open case (after a request for more photos it returns to the dermatologist)."""
    photos = await read_photos(session.settings.max_upload_bytes, close_up, context, extra)
    stored = await service.add_photos(session, principal, case_id=case_id, photos=photos)
    return [photo_read(p) for p in stored]


@router.post("/cases/{case_id}/review", response_model=SkinCaseRead)
async def review(case_id: PathId, session: DbSession, principal: CurrentPrincipal) -> SkinCaseRead:
    """A dermatologist takes a submitted case from the queue."""
    return case_read(await service.start_review(session, principal, case_id=case_id))


@router.post("/cases/{case_id}/answer", response_model=SkinCaseRead)
async def answer(
    case_id: PathId, body: AnswerBody, session: DbSession, principal: CurrentPrincipal
) -> SkinCaseRead:
    """Assessment and plan, a request for more photos, or a conversion to a video or in-person visit."""
    c = await service.answer_case(session, principal, case_id=case_id, **body.model_dump())
    return case_read(c)
