"""Dermatology pages without JavaScript: the patient sends a skin concern from /skin/new with the phone-camera
inputs (a blurred photo is refused in place, what was typed kept), the dermatologist finds it in the queue,
opens the viewer and answers with the form, the patient reads the answer; the chart lists the case."""

from __future__ import annotations

import re

import httpx
from PIL import ImageFilter

from tests.dermatology.conftest import Clinic
from tests.factories import web_login
from tests.files.images import jpeg, picture


def _photos(close_up: bytes, context: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("close_up", ("close.jpg", close_up, "image/jpeg")),
        ("context", ("wide.jpg", context, "image/jpeg")),
    ]


def _no_inline_scripts(html: str) -> None:
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="/static/' in tag, tag


async def test_a_patient_sends_a_concern_from_the_form_and_reads_the_dermatologists_answer(
    app: object, clinic: Clinic
) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))  # type: ignore[arg-type]
    sharp = jpeg(picture((1200, 900)))
    blurred = jpeg(picture((1200, 900)).filter(ImageFilter.GaussianBlur(radius=4)))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as patient,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as derm,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as pcp,
    ):
        csrf = await web_login(patient, clinic.patient)
        home = await patient.get("/home")
        assert 'href="/skin"' in home.text
        form = await patient.get("/skin/new")
        assert form.status_code == 200
        assert form.text.count('accept="image/*" capture="environment"') == 2
        _no_inline_scripts(form.text)
        fields = {
            "csrf_token": csrf,
            "body_site": "leg_right",
            "duration": "two months",
            "changing": "yes",
            "symptoms": "Dark spot that grew",
        }
        refused = await patient.post("/skin/new", data=fields, files=_photos(sharp, blurred))
        assert refused.status_code == 422
        assert (
            "This photo looks blurred. Please retake it in good light, holding the phone steady."
            in refused.text
        )
        assert 'id="context-err"' in refused.text
        assert "two months" in refused.text  # what the patient typed is still there
        sent = await patient.post("/skin/new", data=fields, files=_photos(sharp, sharp))
        assert sent.status_code == 303, sent.text
        match = re.match(r"/skin/(\d+)\?sent=1", sent.headers["location"])
        assert match
        case_id = int(match.group(1))
        page = await patient.get(sent.headers["location"])
        assert "Sent." in page.text
        assert len(re.findall(r'<img src="/api/v1/files/[0-9a-f]{32}"', page.text)) == 2
        assert "Start review" not in page.text
        _no_inline_scripts(page.text)
        listing = await patient.get("/skin")
        assert f'href="/skin/{case_id}"' in listing.text

        derm_csrf = await web_login(derm, clinic.dermatologist)
        queue = await derm.get("/skin")
        assert "Dermatology queue" in queue.text
        assert f'href="/skin/{case_id}"' in queue.text
        viewer = await derm.get(f"/skin/{case_id}")
        assert '<script type="module" src="/static/js/dermatology/viewer.js"></script>' in viewer.text
        assert "data-skin-viewer" in viewer.text
        assert "Dark spot that grew" in viewer.text
        assert f'action="/skin/{case_id}/answer"' in viewer.text
        _no_inline_scripts(viewer.text)
        started = await derm.post(f"/skin/{case_id}/review", data={"csrf_token": derm_csrf})
        assert started.status_code == 303
        answered = await derm.post(
            f"/skin/{case_id}/answer",
            data={
                "csrf_token": derm_csrf,
                "outcome": "assessment_plan",
                "assessment": "Benign seborrhoeic keratosis.",
                "plan": "No treatment needed; send new photos if it changes.",
            },
        )
        assert answered.status_code == 303

        shown = await patient.get(f"/skin/{case_id}")
        assert "The dermatologist&#39;s answer" in shown.text or "The dermatologist's answer" in shown.text
        assert "Benign seborrhoeic keratosis." in shown.text
        assert "Add photos" not in shown.text  # answered: closed

        await web_login(pcp, clinic.pcp)
        chart = await pcp.get(f"/patients/{clinic.patient_id}")
        assert f'href="/skin/{case_id}"' in chart.text


async def test_the_viewer_offers_earlier_photos_of_the_same_site_to_compare(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    sharp = jpeg(picture((800, 600)))
    ids = []
    for _ in range(2):
        r = await client.post(
            "/api/v1/dermatology/cases",
            data={"body_site": "face", "duration": "a year"},
            files=_photos(sharp, sharp),
            headers=clinic.h["patient"],
        )
        ids.append(r.json()["id"])
    await web_login(client, clinic.dermatologist)
    page = await client.get(f"/skin/{ids[1]}")
    assert "Earlier photos of the same site" in page.text
    assert f'href="/skin/{ids[0]}"' in page.text
    assert page.text.count("data-compare ") == 4  # two photos of each case, each can be picked to compare


async def test_a_form_without_the_csrf_token_is_refused(client: httpx.AsyncClient, clinic: Clinic) -> None:
    await web_login(client, clinic.patient)
    r = await client.post("/skin/new", data={"body_site": "face", "duration": "x"})
    assert r.status_code == 403
