"""Real browser (Chromium): a patient answers PHQ-9 item 9 "Several days" and sees the crisis resources at
once, before submitting anything else; the clinician's open task list shows the urgent task live, without a
reload; no script errors or CSP violations on either side (docs/questionnaires.md#item-9)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from telecare.config import Settings
from telecare.core.db import Database
from telecare.identity.models import Role
from tests.conftest import skip_or_fail
from tests.factories import Account, add_to_care_team, make_org, make_patient, make_user
from tests.messaging.test_browser import CHROMIUM, CHROMIUM_ARGS, Side
from tests.monitoring.live import LiveServer


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser exercises pages; both databases run elsewhere
async def test_item9_shows_crisis_resources_and_the_task_arrives_live(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip_or_fail("Chromium not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")

    org = await make_org(db)
    physician = await make_user(db, org, Role.PHYSICIAN)
    patient = await make_patient(db, org, with_login=True)
    assert isinstance(patient, Account)
    assert patient.patient_id is not None
    assert physician.practitioner_id is not None
    await add_to_care_team(
        db, patient_id=patient.patient_id, practitioner_id=physician.practitioner_id, org_id=org
    )
    server = LiveServer(settings, tmp_path)
    server.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            clinician = Side(await (await browser.new_context(base_url=server.base)).new_page())
            person = Side(await (await browser.new_context(base_url=server.base)).new_page())
            for side in (clinician, person):
                side.page.set_default_timeout(10_000)
            await clinician.sign_in(physician)
            await clinician.page.goto("/tasks")
            await clinician.page.locator("body[data-tasks-live=ready]").wait_for()
            await expect(clinician.page.locator("#care-tasks")).to_contain_text("No open tasks")

            await person.sign_in(patient)
            page = person.page
            await page.goto("/questionnaires")
            await page.get_by_role("button", name="Answer PHQ-9").click()
            crisis = page.locator("#crisis-resources")
            await expect(crisis).to_be_hidden()
            item9 = page.get_by_role("group", name="Thoughts that you would be better off dead")
            await item9.get_by_label("Several days").check()
            # Shown from the autosave alone: nothing else answered, nothing submitted.
            await expect(crisis).to_be_visible()
            await expect(crisis).to_contain_text("call or text 988")
            await expect(crisis).to_contain_text("call 911")

            row = clinician.page.locator("#care-tasks tr[data-kind=phq9-item9]")
            await expect(row).to_be_visible()
            await expect(row).to_contain_text("STAT")
            await expect(clinician.page.locator("#tasks-alert")).to_contain_text("1 task waiting")

            # Submitting the unfinished form keeps the answer and the resources on screen.
            await page.get_by_role("button", name="Submit").click()
            await expect(page.locator("#error-summary")).to_be_visible()
            await expect(page.locator("#crisis-resources")).to_be_visible()
            await expect(
                page.get_by_role("group", name="Thoughts that you would be better off dead").get_by_label(
                    "Several days"
                )
            ).to_be_checked()
            assert clinician.errors == []
            assert person.errors == []
            await browser.close()
    finally:
        server.stop()
