"""Real browser (Chromium): a patient sends a message with a photo; a nurse sees it arrive live and replies;
the patient sees the reply and the unread count clears (docs/messaging.md)."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from telecare.auth import sessions
from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity.models import Role
from telecare.messaging.models import Inbox, InboxKind, InboxMember
from tests.conftest import skip_or_fail
from tests.factories import Account, add_to_care_team, make_org, make_patient, make_user, setup_uow
from tests.files.images import CAMERA, gps_exif, jpeg, picture
from tests.monitoring.live import LiveServer

CHROMIUM = "/usr/bin/chromium"
# docs/browser-tests.md#chromium-flags (no media needed here).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SUBJECT = "Rash on my arm"
PATIENT_TEXT = "A red rash appeared on my forearm two days ago. Photo attached."
FOLLOW_UP = "Forgot to say: it itches at night."
NURSE_TEXT = "Thanks for the photo. Please keep it dry; we will call you this afternoon."
LIVE = 10_000  # ms: a socket event, then the page re-reads itself (generous on a loaded 2-core machine)


class Side:
    """One browser context (its own cookie jar) and page; collects script errors and CSP violations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    async def sign_in(self, account: Account) -> None:
        page = self.page
        await page.goto("/login")
        await page.get_by_label("Email").fill(account.email)
        await page.get_by_label("Password").fill(account.password)
        await page.get_by_role("button", name="Sign in").click()
        if account.role is not Role.PATIENT:
            await page.wait_for_url(re.compile(r"/login/(enrol|totp)$"))
            assert account.totp_secret
            await page.get_by_label(re.compile("6-digit code")).fill(
                sessions.current_totp(account.totp_secret)
            )
            await page.get_by_role("button", name=re.compile("Confirm|Verify")).click()
        await page.wait_for_url("**/home")

    async def open_live(self, path: str) -> None:
        """Open a messaging page and wait until its socket listens."""
        await self.page.goto(path)
        await self.page.locator("body[data-messaging-live=ready]").wait_for()

    async def image_loaded(self, img: Any) -> None:
        await img.scroll_into_view_if_needed()
        await self.page.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0", arg=await img.element_handle()
        )


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser exercises pages; both databases run elsewhere
async def test_patient_photo_message_live_reply_and_unread(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip_or_fail("Chromium not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")

    org = await make_org(db)
    nurse = await make_user(db, org, Role.NURSE)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id
    assert nurse.practitioner_id
    await add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=nurse.practitioner_id, org_id=org
    )
    async with setup_uow(db) as s:
        inbox = Inbox(org_id=org, slug="primary-care", name="Primary care", kind=InboxKind.PRIMARY_CARE)
        s.add(inbox)
        await s.flush()
        s.add(InboxMember(org_id=org, inbox_id=inbox.id, user_id=nurse.user_id))
    photo = jpeg(picture((640, 480)), exif=gps_exif())
    assert Image.open(io.BytesIO(photo)).getexif().get_ifd(0x8825)  # the upload does carry GPS

    server = LiveServer(settings, tmp_path)
    server.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            sides = []
            for account in (nurse, patient):
                context = await browser.new_context(base_url=server.base)
                context.set_default_timeout(10_000)
                side = Side(await context.new_page())
                await side.sign_in(account)
                sides.append(side)
            staff, pat = sides

            # The nurse's inbox is open and listening; nothing in it yet.
            await staff.open_live("/messages")
            await expect(staff.page.locator("[data-unread-total]")).to_have_text("0")

            # The patient writes to Primary care with a photo.
            await pat.page.goto("/messages/new")
            await pat.page.get_by_label("To", exact=True).select_option(label="Primary care")
            await pat.page.get_by_label("Subject", exact=True).fill(SUBJECT)
            await pat.page.get_by_label("Message", exact=True).fill(PATIENT_TEXT)
            await pat.page.get_by_label(re.compile("^Photos or documents")).set_input_files(
                files=[{"name": "rash.jpg", "mimeType": "image/jpeg", "buffer": photo}]
            )
            await pat.page.get_by_role("button", name="Send", exact=True).click()
            await pat.page.wait_for_url(re.compile(r"/messages/\d+\?sent=1$"))
            thread_id = int(re.findall(r"/messages/(\d+)", pat.page.url)[0])
            await expect(pat.page.get_by_text("Message sent.")).to_be_visible()
            mine = pat.page.locator("#messages li.message").last
            await expect(mine).to_contain_text(PATIENT_TEXT)
            await expect(mine.locator(".receipt")).to_have_text("Not read yet")
            thumb = mine.get_by_role("img", name=re.compile("^Photo attached"))
            await pat.image_loaded(thumb)
            src = await thumb.get_attribute("src")
            assert src
            assert re.fullmatch(r"/api/v1/files/\w+", src), src
            await pat.page.locator("body[data-messaging-live=ready]").wait_for()

            # The photo the server hands out has lost its EXIF (camera, GPS).
            download = await pat.page.request.get(src)
            assert download.ok, download.status
            stored = Image.open(io.BytesIO(await download.body()))
            stored.load()
            exif = stored.getexif()
            assert not exif.get_ifd(0x8825), "GPS survived"
            assert CAMERA.encode() not in await download.body()

            # The nurse's inbox shows the new conversation without a reload, unread.
            row = staff.page.locator(f"#threads tr[data-thread-id='{thread_id}']")
            await expect(row).to_contain_text(SUBJECT, timeout=LIVE)
            await expect(row).to_have_class(re.compile(r"\bunread\b"))
            await expect(row.locator("td").last).to_have_text("1 unread")
            await expect(staff.page.locator("[data-unread-total]")).to_have_text("1")

            # A follow-up from the patient's thread page: the same inbox page refreshes a second time.
            await pat.page.get_by_label("Reply", exact=True).fill(FOLLOW_UP)
            await expect(
                pat.page.locator("form[action$='/reply'] input[name=idempotency_key]")
            ).not_to_have_value("")
            await pat.page.get_by_role("button", name="Send reply").click()
            await pat.page.wait_for_url(re.compile(rf"/messages/{thread_id}\?sent=1"))
            mine = pat.page.locator("#messages li.message.from-patient")
            await expect(mine.last).to_contain_text(FOLLOW_UP)
            await pat.page.locator("body[data-messaging-live=ready]").wait_for()
            await expect(row.locator("td").last).to_have_text("2 unread", timeout=LIVE)
            await expect(staff.page.locator("[data-unread-total]")).to_have_text("2")

            await row.get_by_role("link", name=SUBJECT).click()
            await staff.page.wait_for_url(f"**/messages/{thread_id}")
            theirs = staff.page.locator("#messages li.message.from-patient")
            await expect(theirs).to_have_count(2)
            await expect(theirs.first).to_contain_text(PATIENT_TEXT)
            await expect(theirs.last).to_contain_text(FOLLOW_UP)
            await staff.image_loaded(theirs.first.get_by_role("img", name=re.compile("^Photo attached")))

            # The patient's open thread hears that the team read it (read receipt, live).
            for receipt in await mine.locator(".receipt").all():
                await expect(receipt).to_contain_text(re.compile(r"^Read "), timeout=LIVE)
            # The patient moves to their list before the reply arrives (opening the thread would read it).
            await pat.open_live("/messages")
            await expect(pat.page.locator("#counts")).to_contain_text("0 unread replies")

            await staff.page.get_by_label("Reply", exact=True).fill(NURSE_TEXT)
            # Still set if a live refresh swapped the form in meanwhile.
            await expect(
                staff.page.locator("form[action$='/reply'] input[name=idempotency_key]")
            ).not_to_have_value("")
            await staff.page.get_by_role("button", name="Send reply").click()
            await staff.page.wait_for_url(re.compile(rf"/messages/{thread_id}\?sent=1"))
            answer = staff.page.locator("#messages li.message.from-team").last
            await expect(answer).to_contain_text(NURSE_TEXT)
            await expect(answer.locator(".receipt")).to_have_text("Not read yet")
            await staff.page.locator("body[data-messaging-live=ready]").wait_for()

            # The patient's list updates live: one unread reply.
            prow = pat.page.locator(f"#threads tr[data-thread-id='{thread_id}']")
            await expect(pat.page.locator("#counts")).to_contain_text(
                "1 unread reply from your care team", timeout=LIVE
            )
            await expect(prow).to_have_class(re.compile(r"\bunread\b"))
            await prow.get_by_role("link", name=SUBJECT).click()
            await pat.page.wait_for_url(f"**/messages/{thread_id}")
            await expect(pat.page.locator("#messages li.message.from-team")).to_contain_text(NURSE_TEXT)
            # The nurse's open thread hears that the patient read the reply (read receipt, live).
            await expect(answer.locator(".receipt")).to_contain_text(re.compile(r"^Read "), timeout=LIVE)

            # Back on the list the reply is read: count 0, the row no longer marked.
            await pat.open_live("/messages")
            await expect(pat.page.locator("#counts")).to_contain_text("0 unread replies")
            await expect(prow).not_to_have_class(re.compile(r"\bunread\b"))
            await expect(prow.locator("td").last).to_have_text("0")

            errors = [f"nurse: {e}" for e in staff.errors] + [f"patient: {e}" for e in pat.errors]
            await browser.close()
    finally:
        server.stop()
    assert errors == []
