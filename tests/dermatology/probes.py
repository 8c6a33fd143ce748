"""Authorization-matrix probes for store-and-forward dermatology (see tests/access/matrix_kit.py): skin cases
(Media).

The world gets, per organization, a dermatology queue (the e-consult queue of specialty "dermatology")
whose members are every clinician caller, holding a submitted case of the party's own patient with two
photos; the party's other patient has a case that the bystander physician (not a caller, not in the queue)
is reviewing, so no caller reaches it through the queue. Each case's symptoms carry a marker only it
holds."""

from __future__ import annotations

from typing import Any

from PIL import Image
from sqlalchemy import func, select

from telecare.access.policy import Action, Resource
from telecare.auth.principal import Principal
from telecare.core.time import utc_now
from telecare.dermatology import service
from telecare.dermatology.models import BodySite, PhotoRole, SkinCase, SkinCaseStatus, SkinPhoto
from telecare.econsult.models import ConsultQueue, ConsultQueueMember
from telecare.files import service as files
from telecare.identity.models import Role
from tests.access.matrix_kit import (
    CLINICAL,
    Caller,
    Outcome,
    Rel,
    Target,
    World,
    absent,
    body_of,
    ids_in,
    next_case,
    probe,
    targets,
    world_setup,
)
from tests.factories import setup_uow
from tests.files.images import jpeg, picture

SKIN = Resource.SKIN_CASE
R, S, C, UPD, D, E = (Action.READ, Action.SEARCH, Action.CREATE, Action.UPDATE, Action.DELETE, Action.EXPORT)
API = "/api/v1/dermatology"
_PHOTO: list[bytes] = []


def photo() -> bytes:
    """A sharp 800 x 600 test photo (made once: every create and update probe sends it)."""
    if not _PHOTO:
        image: Image.Image = picture((800, 600))
        _PHOTO.append(jpeg(image))
    return _PHOTO[0]


def _ok(response: Any) -> bool:
    return 200 <= int(response.status_code) < 300


def _marker(patient_id: int) -> str:
    return f"Skin{patient_id}zq"


@world_setup
async def _dermatology_world(world: World) -> None:
    now = utc_now()
    for party in (world.a, world.b):
        async with setup_uow(world.db) as s:
            queue = ConsultQueue(org_id=party.org_id, specialty=service.SPECIALTY, name="Dermatology")
            s.add(queue)
            await s.flush()
            for role in CLINICAL:
                s.add(
                    ConsultQueueMember(
                        org_id=party.org_id, queue_id=queue.id, user_id=party.accounts[role].user_id
                    )
                )
        physician = party.accounts[CLINICAL[0]]
        for rec, submitter, reviewer in (
            (party.own, party.accounts[Role.PATIENT], None),
            (party.other, party.bystander, party.bystander),
        ):
            async with setup_uow(world.db) as s:
                case = SkinCase(
                    org_id=party.org_id,
                    patient_id=rec.id,
                    submitted_by_user_id=submitter.user_id,
                    body_site=BodySite.ARM_LEFT,
                    duration="three weeks",
                    changing=True,
                    symptoms=f"Itchy, scaly patch {_marker(rec.id)}",
                    prior_treatment="moisturiser",
                    status=SkinCaseStatus.IN_REVIEW if reviewer else SkinCaseStatus.SUBMITTED,
                    reviewer_user_id=reviewer.user_id if reviewer else None,
                    due_at=now,
                    created_at=now,
                )
                s.add(case)
                await s.flush()
                world.extra[f"skin:case:{rec.id}"] = case.id
            uploader = physician if reviewer is None else party.bystander
            principal = Principal(
                user_id=uploader.user_id,
                org_id=party.org_id,
                role=Role.PHYSICIAN,
                kind="token",
                practitioner_id=uploader.practitioner_id,
            )
            async with world.db.unit_of_work() as s:
                for photo_role in (PhotoRole.CLOSE_UP, PhotoRole.CONTEXT):
                    row = await files.store_upload(
                        s,
                        principal,
                        patient_id=rec.id,
                        data=photo(),
                        declared_name=f"{photo_role}.jpg",
                        owner_kind="skin_case",
                        owner_id=case.id,
                    )
                    s.add(
                        SkinPhoto(
                            org_id=party.org_id,
                            case_id=case.id,
                            file_id=row.id,
                            role=photo_role,
                            width=800,
                            height=600,
                            sharpness=100.0,
                        )
                    )


def _patient_of(world: World, rel: Rel) -> Any:
    return {Rel.OWN: world.a.own, Rel.SAME_ORG: world.a.other, Rel.OTHER_ORG: world.b.own}[rel]


@targets(SKIN)
async def _case_target(world: World, caller: Caller, rel: Rel) -> Target:
    rec = _patient_of(world, rel)
    return Target(world.extra[f"skin:case:{rec.id}"], rec.id, (*rec.markers, _marker(rec.id)))


@probe(SKIN, R)
async def _case_read(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/cases/{t.id}", headers=caller.headers)
    return Outcome(r, _ok(r) and body_of(r).get("id") == t.id and len(body_of(r).get("photos", [])) >= 2)


@probe(SKIN, S, collection=True)
async def _case_search(world: World, caller: Caller, t: Target) -> Outcome:
    r = await world.client.get(f"{API}/cases", params={"patient_id": t.patient_id}, headers=caller.headers)
    return Outcome(r, _ok(r) and t.id in ids_in(body_of(r)))


async def _count(world: World, model: Any, *where: Any) -> int:
    async with setup_uow(world.db) as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@probe(SKIN, C)
async def _case_submit(world: World, caller: Caller, t: Target) -> Outcome:
    symptoms = f"probe symptoms {next_case()}"
    r = await world.client.post(
        f"{API}/cases",
        data={
            "patient_id": str(t.patient_id),
            "body_site": "back",
            "duration": "two days",
            "symptoms": symptoms,
        },
        files=[
            ("close_up", ("close.jpg", photo(), "image/jpeg")),
            ("context", ("wide.jpg", photo(), "image/jpeg")),
        ],
        headers=caller.headers,
    )
    made = (
        await _count(world, SkinCase, SkinCase.symptoms == symptoms, SkinCase.patient_id == t.patient_id) == 1
    )
    return Outcome(r, _ok(r) and body_of(r).get("patient_id") == t.patient_id, made)


@probe(SKIN, UPD)
async def _case_add_photo(world: World, caller: Caller, t: Target) -> Outcome:
    before = await _count(world, SkinPhoto, SkinPhoto.case_id == t.id)
    r = await world.client.post(
        f"{API}/cases/{t.id}/photos",
        files=[("extra", ("more.jpg", photo(), "image/jpeg"))],
        headers=caller.headers,
    )
    after = await _count(world, SkinPhoto, SkinPhoto.case_id == t.id)
    return Outcome(r, _ok(r) and len(body_of(r)) == 1, after == before + 1)


absent(
    SKIN,
    D,
    "DELETE",
    f"{API}/cases/{{id}}",
    reason="skin cases are part of the record (an asynchronous encounter): never deleted",
)
absent(
    SKIN,
    E,
    "GET",
    f"{API}/cases/{{id}}/$export",
    reason="skin cases leave in the patient's export (Patient $export, section skin_cases)",
)
