"""Real browser (Chromium): an alert appears on an open nurse dashboard after a device posts a reading,
without a reload, and the nurse acknowledges it there."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest

from telecare.config import Settings
from telecare.core.db import Database
from telecare.core.time import utc_now
from tests.conftest import skip_or_fail
from tests.monitoring.conftest import build_clinic
from tests.monitoring.live import LiveServer

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
async def test_alert_reaches_open_dashboard_and_is_acknowledged(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        skip_or_fail("Chromium not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright, expect

    clinic = await build_clinic(db)
    server = LiveServer(settings, tmp_path)
    server.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Console errors include CSP violations (an inline script or style the policy refused).
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            await page.goto(f"{server.base}/login")
            await page.fill("#email", clinic.nurse.email)
            await page.fill("#password", clinic.nurse.password)
            await page.click("button[type=submit]")
            assert clinic.nurse.totp_secret
            await page.fill("#code", pyotp.TOTP(clinic.nurse.totp_secret).now())
            await page.click("main button[type=submit]")
            await page.goto(f"{server.base}/monitoring")
            await expect(page.locator("#live-status")).to_have_text("live", timeout=10_000)
            assert await page.locator("#alerts tbody tr").count() == 0
            reading = {
                "device": clinic.serials["bp_cuff"],
                "measured_at": (utc_now() - timedelta(minutes=1)).isoformat(),
                "kind": "blood_pressure",
                "systolic": 192,
                "diastolic": 104,
                "unit": "mm[Hg]",
            }
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    f"{server.base}/api/v1/monitoring/readings",
                    json=[reading],
                    headers={"Authorization": f"Bearer {clinic.key}"},
                )
            assert r.json()["alerts_opened"] == 1
            row = page.locator("#alerts tbody tr").first
            await expect(row).to_contain_text("Blood pressure in crisis range", timeout=5_000)
            await expect(row).to_contain_text("systolic 192 > 180")
            await expect(row.locator(".status")).to_have_text("open")
            await row.locator("input[name=note]").fill("Called patient, advised ED")
            await row.get_by_role("button", name="Acknowledge").click()
            await expect(row.locator(".status")).to_have_text("acknowledged", timeout=5_000)
            assert errors == []
            await browser.close()
    finally:
        server.stop()
    from sqlalchemy import select

    from telecare.monitoring.models import Alert

    async with db.unit_of_work() as s:
        alert = (await s.execute(select(Alert))).scalar_one()
    assert alert.status == "acknowledged"
    assert alert.ack_note == "Called patient, advised ED"
    assert alert.acknowledged_by_user_id == clinic.nurse.user_id
