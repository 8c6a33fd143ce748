"""Real browser (Chromium): the dermatologist's viewer zooms a photo with a click and with the keyboard, and
shows a current and an earlier photo of the same site side by side; no script errors or CSP violations
(docs/dermatology.md#viewer)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from telecare.config import Settings
from telecare.core.db import Database
from tests.conftest import skip_or_fail
from tests.dermatology.conftest import build_clinic
from tests.factories import token_for
from tests.files.images import jpeg, picture
from tests.messaging.test_browser import CHROMIUM, CHROMIUM_ARGS, Side
from tests.monitoring.live import LiveServer


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser exercises pages; both databases run elsewhere
async def test_the_viewer_zooms_and_compares_with_an_earlier_photo(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip_or_fail("Chromium not installed (apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")

    clinic = await build_clinic(db)
    headers = {"Authorization": f"Bearer {await token_for(db, clinic.patient)}"}
    photo = jpeg(picture((800, 600)))
    server = LiveServer(settings, tmp_path)
    server.start()
    try:
        ids = []
        async with httpx.AsyncClient(base_url=server.base, headers=headers) as api:
            for _ in range(2):
                r = await api.post(
                    "/api/v1/dermatology/cases",
                    data={"body_site": "face", "duration": "a year"},
                    files=[
                        ("close_up", ("close.jpg", photo, "image/jpeg")),
                        ("context", ("wide.jpg", photo, "image/jpeg")),
                    ],
                )
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = await browser.new_context(base_url=server.base)
            context.set_default_timeout(10_000)
            side = Side(await context.new_page())
            await side.sign_in(clinic.dermatologist)
            page = side.page
            await page.goto(f"/skin/{ids[1]}")
            await expect(page.locator("[data-viewer-hint]")).to_contain_text("Click a photo")

            first = page.locator("[data-photo]").first
            link = first.locator("a[data-zoom]")
            await side.image_loaded(link.locator("img"))
            await link.click()
            await expect(first).to_have_class(re.compile(r"\bzoomed\b"))
            await expect(link).to_have_attribute("aria-pressed", "true")
            assert page.url.endswith(f"/skin/{ids[1]}")  # zoomed in place, not navigated to the file
            await link.press("+")
            await expect(link).to_have_attribute("data-level", "3")
            await link.press("Escape")
            await expect(first).not_to_have_class(re.compile(r"\bzoomed\b"))
            await link.focus()
            await link.press("Enter")
            await expect(first).to_have_class(re.compile(r"\bzoomed\b"))

            region = page.locator("[data-compare-region]")
            await expect(region).to_be_hidden()
            await page.locator("[data-compare]").first.check()
            earlier = page.locator("section[aria-labelledby=earlier-h] [data-compare]").first
            await earlier.check()
            await expect(region).to_be_visible()
            pair = region.locator("[data-compare-pair] img")
            await expect(pair).to_have_count(2)
            await expect(pair.last).to_have_attribute("alt", re.compile("^Earlier close up"))
            for n in range(2):
                await side.image_loaded(pair.nth(n))
            await page.locator("[data-compare]").first.uncheck()
            await expect(region).to_be_hidden()
            errors = list(side.errors)
            await browser.close()
    finally:
        server.stop()
    assert errors == []
