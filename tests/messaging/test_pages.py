"""Messaging pages without JavaScript: the composer (with its emergency notice and a photo), the thread page
with the reply form, the staff inbox with filters, the chart section, and form errors shown in place."""

from __future__ import annotations

import re

import httpx

from tests.factories import web_login
from tests.files.images import jpeg, picture
from tests.messaging.conftest import Practice


def _thread_id(location: str) -> int:
    match = re.match(r"/messages/(\d+)", location)
    assert match, location
    return int(match.group(1))


async def test_a_patient_writes_from_the_composer_and_the_nurse_answers_from_the_thread_page(
    app: object, practice: Practice
) -> None:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as patient,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as nurse,
    ):
        csrf = await web_login(patient, practice.patient)
        composer = await patient.get("/messages/new")
        assert composer.status_code == 200
        assert "911" in composer.text
        assert "988" in composer.text
        assert "Behavioral health" in composer.text
        assert "Primary care" in composer.text
        sent = await patient.post(
            "/messages/new",
            data={
                "csrf_token": csrf,
                "inbox_id": str(practice.primary),
                "subject": "Knee pain",
                "body": "My knee is swollen after the fall.",
            },
            files=[("files", ("knee.jpg", jpeg(picture()), "image/jpeg"))],
        )
        assert sent.status_code == 303, sent.text
        thread_id = _thread_id(sent.headers["location"])
        page = await patient.get(sent.headers["location"])
        assert "Message sent." in page.text
        assert "My knee is swollen" in page.text
        assert re.search(r'<img src="/api/v1/files/[0-9a-f]{32}" alt="Photo attached: knee.jpg"', page.text)

        nurse_csrf = await web_login(nurse, practice.nurse)
        inbox = await nurse.get("/messages?filter=unassigned")
        assert f'href="/messages/{thread_id}"' in inbox.text
        assert "Knee pain" in inbox.text
        assert "1</span> unread from patients" in inbox.text.replace("data-unread-total>", ">")
        thread = await nurse.get(f"/messages/{thread_id}")
        assert "Send reply" in thread.text
        assert "Close conversation" in thread.text
        answer = await nurse.post(
            f"/messages/{thread_id}/reply", data={"csrf_token": nurse_csrf, "body": "Rest it and ice it."}
        )
        assert answer.status_code == 303
        listing = await patient.get("/messages")
        assert "1</span> unread reply from your care team" in listing.text.replace("data-unread-total>", ">")
        shown = await patient.get(f"/messages/{thread_id}")
        assert "Rest it and ice it." in shown.text
        listing = await patient.get("/messages")
        assert "0</span> unread replies" in listing.text.replace("data-unread-total>", ">")
        # The thread is in the patient's chart, for the clinician.
        chart = await nurse.get(f"/patients/{practice.patient.patient_id}")
        assert f'href="/messages/{thread_id}"' in chart.text


async def test_the_composer_keeps_the_text_and_names_the_field_when_a_file_is_refused(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    csrf = await web_login(client, practice.patient)
    r = await client.post(
        "/messages/new",
        data={
            "csrf_token": csrf,
            "inbox_id": str(practice.primary),
            "subject": "Lab",
            "body": "See attached",
        },
        files=[("files", ("report.png", b"<html>not an image</html>", "image/png"))],
    )
    assert r.status_code == 415
    assert "See attached" in r.text  # what the patient typed is still there
    assert 'class="error" id="files-err"' in r.text


async def test_a_form_without_the_csrf_token_is_refused(
    client: httpx.AsyncClient, practice: Practice
) -> None:
    await web_login(client, practice.patient)
    r = await client.post(
        "/messages/new", data={"inbox_id": str(practice.primary), "subject": "x", "body": "y"}
    )
    assert r.status_code == 403
