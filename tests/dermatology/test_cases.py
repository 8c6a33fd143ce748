"""Skin cases through the REST API, on both databases: a patient sends two photos from the portal; blurred,
tiny or missing photos are refused with a request to retake and store nothing; the dermatologist of the
queue sees the case, compares with earlier photos of the same site and answers; the patient is told there is
news (never what) and reads the answer; a request for more photos brings new photos to the same case;
nobody else sees the case or its photos (docs/dermatology.md)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from PIL import ImageFilter
from sqlalchemy import func, select

from telecare.core.db import Database
from telecare.dermatology import service
from telecare.dermatology.models import SkinCase, SkinPhoto
from telecare.files.models import StoredFile
from telecare.notifications.models import Notification
from tests.dermatology.conftest import Clinic
from tests.factories import setup_uow
from tests.files.images import heic, jpeg, picture

API = "/api/v1/dermatology"
MARKER = "Scalyrash7Q"


def sharp(size: tuple[int, int] = (1200, 900)) -> bytes:
    return jpeg(picture(size))


def blurred(size: tuple[int, int] = (1200, 900)) -> bytes:
    return jpeg(picture(size).filter(ImageFilter.GaussianBlur(radius=4)))


async def submit(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    close_up: bytes | None = None,
    context: bytes | None = None,
    extra: list[bytes] | None = None,
    **fields: str,
) -> httpx.Response:
    data = {
        "body_site": "arm_left",
        "duration": "three weeks",
        "changing": "true",
        "symptoms": f"Itchy and scaly {MARKER}",
        "prior_treatment": "Hydrocortisone 1% for a week",
    }
    data.update(fields)
    parts: list[tuple[str, tuple[str, bytes, str]]] = []
    if close_up is not None:
        parts.append(("close_up", ("close.jpg", close_up, "image/jpeg")))
    if context is not None:
        parts.append(("context", ("wide.jpg", context, "image/jpeg")))
    parts += [("extra", (f"x{n}.jpg", e, "image/jpeg")) for n, e in enumerate(extra or [])]
    return await client.post(f"{API}/cases", data=data, files=parts, headers=headers)


async def _count(db: Database, model: Any) -> int:
    async with setup_uow(db) as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_patient_sends_a_skin_concern_and_the_dermatologist_answers_it(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    c = clinic
    r = await submit(client, c.h["patient"], close_up=sharp(), context=sharp((900, 1200)))
    assert r.status_code == 201, r.text
    case = r.json()
    assert case["patient_id"] == c.patient_id
    assert case["status"] == "submitted"
    assert [p["role"] for p in case["photos"]] == ["close_up", "context"]
    assert all(p["sharpness"] >= service.MIN_SHARPNESS for p in case["photos"])
    assert case["due_at"] > case["created_at"]
    cid, file_id = case["id"], case["photos"][0]["id"]

    queue = (await client.get(f"{API}/cases", params={"view": "queue"}, headers=c.h["derm"])).json()
    assert [q["id"] for q in queue] == [cid]
    seen = await client.get(f"{API}/cases/{cid}", headers=c.h["derm"])
    assert seen.status_code == 200
    assert MARKER in seen.text
    photo = await client.get(seen.json()["photos"][0]["url"], headers=c.h["derm"])
    assert photo.status_code == 200
    assert photo.content[:2] == b"\xff\xd8"

    # Nobody else: not a dermatologist outside the queue, not a clinician without a relationship, not another
    # patient; by case id, by photo id, in lists.
    for who in ("outside_derm", "outsider", "other_patient"):
        got = await client.get(f"{API}/cases/{cid}", headers=c.h[who])
        assert got.status_code == 404, who
        assert got.json()["code"] == "skin_case_not_found"
        assert MARKER not in got.text
        assert "arm_left" not in got.text
        pic = await client.get(f"/api/v1/files/{file_id}", headers=c.h[who])
        assert pic.status_code == 404, who
        assert pic.headers["content-type"].startswith("application/problem+json")
        assert pic.content[:2] != b"\xff\xd8"
        for view in ("queue", "mine"):
            listed = await client.get(f"{API}/cases", params={"view": view}, headers=c.h[who])
            assert listed.json() == [], (who, view)
        answered = await client.post(
            f"{API}/cases/{cid}/answer",
            json={"outcome": "assessment_plan", "assessment": "x", "plan": "y"},
            headers=c.h[who],
        )
        assert answered.status_code in (403, 404), who
        assert MARKER not in answered.text
    # The patient's own physician reads it but is not a dermatologist: no answer.
    assert (await client.get(f"{API}/cases/{cid}", headers=c.h["pcp"])).status_code == 200
    refused = await client.post(
        f"{API}/cases/{cid}/answer",
        json={"outcome": "assessment_plan", "assessment": "x", "plan": "y"},
        headers=c.h["pcp"],
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_a_dermatologist"

    taken = await client.post(f"{API}/cases/{cid}/review", headers=c.h["derm"])
    assert taken.json()["status"] == "in_review"
    assert taken.json()["reviewer_user_id"] == c.dermatologist.user_id
    answer = await client.post(
        f"{API}/cases/{cid}/answer",
        json={
            "outcome": "assessment_plan",
            "assessment": "Nummular eczema. Secretmark assessment.",
            "plan": "Emollient twice daily; mometasone 0.1% at night for two weeks.",
        },
        headers=c.h["derm"],
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "answered"
    assert answer.json()["answered_at"] is not None

    async with setup_uow(db) as s:
        notes = (
            (await s.execute(select(Notification).where(Notification.recipient_user_id == c.patient.user_id)))
            .scalars()
            .all()
        )
    [note] = notes
    assert note.kind == "skin_case"
    assert note.link == f"/skin/{cid}"
    assert "news" in note.subject
    for secret in ("eczema", "Secretmark", "mometasone", "arm", MARKER):
        assert secret not in note.subject + note.body

    mine = (await client.get(f"{API}/cases", headers=c.h["patient"])).json()
    assert [(m["id"], m["status"]) for m in mine] == [(cid, "answered")]
    shown = (await client.get(f"{API}/cases/{cid}", headers=c.h["patient"])).json()
    assert shown["assessment"].startswith("Nummular eczema")
    assert shown["plan"].startswith("Emollient")
    # Answered and taken: the case left the queue; the reviewer still reaches it.
    assert (await client.get(f"{API}/cases", params={"view": "queue"}, headers=c.h["derm"])).json() == []
    assert (await client.get(f"{API}/cases/{cid}", headers=c.h["derm"])).status_code == 200

    export = await client.get(f"/api/v1/patients/{c.patient_id}/$export", headers=c.h["pcp"])
    assert export.status_code == 200, export.text
    [documented] = export.json()["skin_cases"]["skin_cases"]
    assert documented["modality"] == "asynchronous (store-and-forward)"
    assert documented["reviewer_user_id"] == c.dermatologist.user_id
    assert documented["answered_at"] is not None
    assert documented["assessment"].startswith("Nummular eczema")
    assert len(documented["photos"]) == 2


async def test_one_photo_is_not_enough(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    r = await submit(client, clinic.h["patient"], close_up=sharp())
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["context"]
    assert await _count(db, SkinCase) == 0
    assert await _count(db, StoredFile) == 0


async def test_a_blurred_photo_is_refused_with_a_request_to_retake_and_nothing_is_stored(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    r = await submit(client, clinic.h["patient"], close_up=blurred(), context=sharp())
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "photo_rejected"
    assert problem["errors"] == [{"field": "close_up", "detail": service.BLURRED}]
    assert "Please retake it in good light, holding the phone steady." in r.text
    later = await submit(client, clinic.h["patient"], close_up=sharp(), context=sharp(), extra=[blurred()])
    assert later.status_code == 422
    assert later.json()["errors"][0]["field"] == "extra[0]"
    assert await _count(db, SkinCase) == 0
    assert await _count(db, SkinPhoto) == 0
    assert await _count(db, StoredFile) == 0


async def test_a_tiny_photo_is_refused(client: httpx.AsyncClient, db: Database, clinic: Clinic) -> None:
    r = await submit(client, clinic.h["patient"], close_up=sharp(), context=sharp((400, 300)))
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["field"] == "context"
    assert "too small" in error["detail"]
    assert await _count(db, StoredFile) == 0


async def test_an_iphone_heic_photo_is_accepted(client: httpx.AsyncClient, clinic: Clinic) -> None:
    photo = heic(picture((1200, 900)))
    r = await client.post(
        f"{API}/cases",
        data={"body_site": "face", "duration": "a month"},
        files=[
            ("close_up", ("IMG_0001.HEIC", photo, "image/heic")),
            ("context", ("wide.jpg", sharp(), "image/jpeg")),
        ],
        headers=clinic.h["patient"],
    )
    assert r.status_code == 201, r.text
    close_up = r.json()["photos"][0]
    downloaded = await client.get(close_up["url"], headers=clinic.h["patient"])
    assert downloaded.headers["content-type"].startswith("image/jpeg")  # stored re-encoded as JPEG


async def test_a_clinician_submits_for_their_patient_and_a_retry_returns_the_first(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    headers = {**clinic.h["pcp"], "Idempotency-Key": "skin-1"}
    first = await submit(
        client, headers, close_up=sharp(), context=sharp(), patient_id=str(clinic.patient_id)
    )
    again = await submit(
        client, headers, close_up=sharp(), context=sharp(), patient_id=str(clinic.patient_id)
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert await _count(db, SkinCase) == 1
    missing = await submit(client, clinic.h["pcp"], close_up=sharp(), context=sharp())
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "patient_id"
    # Another patient's concern, for a clinician with no relationship: 404, nothing stored.
    other = await submit(
        client,
        clinic.h["outsider"],
        close_up=sharp(),
        context=sharp(),
        patient_id=str(clinic.patient_id),
    )
    assert other.status_code == 404
    assert await _count(db, SkinCase) == 1


async def test_more_photos_are_asked_for_and_added_to_the_same_case(
    client: httpx.AsyncClient, db: Database, clinic: Clinic
) -> None:
    c = clinic
    cid = (await submit(client, c.h["patient"], close_up=sharp(), context=sharp())).json()["id"]
    ask = await client.post(
        f"{API}/cases/{cid}/answer",
        json={"outcome": "more_photos", "plan": "A close-up with a ruler beside it."},
        headers=c.h["derm"],
    )
    assert ask.status_code == 200, ask.text
    assert ask.json()["status"] == "more_photos_requested"
    assert ask.json()["answered_at"] is None
    shown = (await client.get(f"{API}/cases/{cid}", headers=c.h["patient"])).json()
    assert shown["plan"] == "A close-up with a ruler beside it."
    # The other patient cannot add photos to it.
    refused = await client.post(
        f"{API}/cases/{cid}/photos",
        files=[("close_up", ("n.jpg", sharp(), "image/jpeg"))],
        headers=c.h["other_patient"],
    )
    assert refused.status_code == 404
    blurry = await client.post(
        f"{API}/cases/{cid}/photos",
        files=[("close_up", ("n.jpg", blurred(), "image/jpeg"))],
        headers=c.h["patient"],
    )
    assert blurry.status_code == 422
    assert blurry.json()["errors"][0]["field"] == "close_up"
    added = await client.post(
        f"{API}/cases/{cid}/photos",
        files=[("close_up", ("ruler.jpg", sharp(), "image/jpeg"))],
        headers=c.h["patient"],
    )
    assert added.status_code == 201, added.text
    after = (await client.get(f"{API}/cases/{cid}", headers=c.h["derm"])).json()
    assert after["status"] == "in_review"
    assert len(after["photos"]) == 3
    assert [q["id"] for q in (await client.get(f"{API}/cases?view=queue", headers=c.h["derm"])).json()] == [
        cid
    ]
    converted = await client.post(
        f"{API}/cases/{cid}/answer",
        json={"outcome": "in_person_visit", "plan": "Needs a biopsy."},
        headers=c.h["derm"],
    )
    assert converted.json()["status"] == "converted"
    late = await client.post(
        f"{API}/cases/{cid}/photos",
        files=[("close_up", ("late.jpg", sharp(), "image/jpeg"))],
        headers=c.h["patient"],
    )
    assert late.status_code == 409
    async with setup_uow(db) as s:
        count = await s.scalar(
            select(func.count(Notification.id)).where(Notification.recipient_user_id == c.patient.user_id)
        )
    assert count == 2  # the request for photos, the conversion


async def test_the_viewer_lists_earlier_photos_of_the_same_site(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    c = clinic
    first = (await submit(client, c.h["patient"], close_up=sharp(), context=sharp())).json()
    elsewhere = (
        await submit(client, c.h["patient"], close_up=sharp(), context=sharp(), body_site="back")
    ).json()
    second = (await submit(client, c.h["patient"], close_up=sharp(), context=sharp())).json()
    view = (await client.get(f"{API}/cases/{second['id']}", headers=c.h["derm"])).json()
    [earlier] = view["earlier"]
    assert earlier["id"] == first["id"]
    assert [p["id"] for p in earlier["photos"]] == [p["id"] for p in first["photos"]]
    assert elsewhere["id"] not in {e["id"] for e in view["earlier"]}
    # Earlier photos open for the dermatologist (the same patient's files).
    pic = await client.get(earlier["photos"][0]["url"], headers=c.h["derm"])
    assert pic.status_code == 200
    # The first case has nothing earlier.
    assert (await client.get(f"{API}/cases/{first['id']}", headers=c.h["derm"])).json()["earlier"] == []


@pytest.mark.parametrize("field", ["body_site", "duration"])
async def test_the_history_is_required(client: httpx.AsyncClient, clinic: Clinic, field: str) -> None:
    h, close_up, context = clinic.h["patient"], sharp(), sharp()
    if field == "body_site":
        r = await submit(client, h, close_up=close_up, context=context, body_site="elbow")
    else:
        r = await submit(client, h, close_up=close_up, context=context, duration=" ")
    assert r.status_code == 422
    assert field in {e["field"] for e in r.json()["errors"]} or field in r.text
