"""The whole visit in real Chromium (fake camera and microphone) against the real server in a subprocess:
the patient books a slot and checks in with a location, waits; the clinician admits from the live queue;
media flows both ways; the clinician switches to audio only and audio keeps flowing with no video sent;
the visit ends. Screenshots of the waiting room, the queue and the call go to test-artifacts/."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time as clock_time
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select

from telecare.config import Mode, Settings
from telecare.core import migrate
from telecare.core.db import Database
from telecare.core.time import utc_now
from telecare.domains import install as install_domains
from telecare.identity.models import Practitioner, Role
from telecare.scheduling.models import (
    POLICY_DEFAULTS,
    AvailabilityTemplate,
    Modality,
    PatientKind,
    SchedulingPolicy,
    VisitType,
)
from telecare.visits.models import ConsentText, VisitEvent
from tests.conftest import skip_or_fail
from tests.factories import Account, add_license, make_org, make_patient, make_user
from tests.visits.live.conftest import free_port

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Seeded:
    patient: Account
    doctor: Account
    visit_type_id: int


async def _seed(settings: Settings) -> Seeded:
    """A clinic whose doctor (licensed in PA, time zone UTC) is free all day, bookable from now, with
    check-in open a day ahead, so the real clock of the server subprocess can be used."""
    install_domains()
    db = Database(settings)
    try:
        org_id = await make_org(db)
        doctor = await make_user(db, org_id, Role.PHYSICIAN)
        assert doctor.practitioner_id is not None
        await add_license(db, practitioner_id=doctor.practitioner_id, org_id=org_id, state="PA")
        patient = await make_patient(
            db, org_id, state="PA", with_login=True, address_line="12 Elm Street", city="Scranton"
        )
        assert isinstance(patient, Account)
        async with db.unit_of_work() as s:
            prac = await s.get(Practitioner, doctor.practitioner_id)
            assert prac is not None
            prac.timezone = "UTC"
            for weekday in range(7):
                s.add(
                    AvailabilityTemplate(
                        org_id=org_id,
                        practitioner_id=prac.id,
                        weekday=weekday,
                        start_time=clock_time(0),
                        end_time=clock_time(23, 59),
                    )
                )
            policy: dict[str, Any] = {
                **POLICY_DEFAULTS,
                "min_booking_lead_minutes": 0,
                "checkin_opens_minutes": 24 * 60,
            }
            s.add(SchedulingPolicy(org_id=org_id, **policy))
            vt = VisitType(
                org_id=org_id,
                name="Follow-up",
                duration_minutes=30,
                modalities=[Modality.VIDEO, Modality.AUDIO],
                patient_kind=PatientKind.ESTABLISHED,
            )
            s.add_all(
                [
                    vt,
                    ConsentText(
                        org_id=org_id,
                        version=1,
                        title="Telehealth consent",
                        body="I agree to receive care by video or telephone and understand its limits.",
                    ),
                ]
            )
            await s.flush()
            return Seeded(patient, doctor, vt.id)
    finally:
        await db.dispose()


async def _timeline(settings: Settings) -> list[tuple[str, str | None]]:
    db = Database(settings)
    try:
        async with db.unit_of_work() as s:
            rows = await s.execute(select(VisitEvent.kind, VisitEvent.reason).order_by(VisitEvent.id))
            return [(str(k), r) for k, r in rows.all()]
    finally:
        await db.dispose()


@dataclass
class Server:
    base: str
    settings: Settings
    seeded: Seeded


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        skip_or_fail("Chromium missing: apt-get install -y chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail("Playwright missing: pip install playwright")
    port = free_port()
    env = {
        "TELECARE_MODE": "test",
        "TELECARE_DATABASE_URL": f"sqlite:///{tmp_path / 'telecare.db'}",
        "TELECARE_DATA_DIR": str(tmp_path / "data"),
        "TELECARE_BASE_URL": f"http://127.0.0.1:{port}",
        "TELECARE_SESSION_SECRET": "browser-test-session-secret-" + "s" * 32,
        "TELECARE_AUDIT_HMAC_KEY": "browser-test-audit-key-" + "a" * 32,
        "TELECARE_LOG_LEVEL": "WARNING",
    }
    settings = Settings(
        mode=Mode.TEST,
        database_url=env["TELECARE_DATABASE_URL"],
        data_dir=tmp_path / "data",
        session_secret=env["TELECARE_SESSION_SECRET"],  # type: ignore[arg-type]
        audit_hmac_key=env["TELECARE_AUDIT_HMAC_KEY"],  # type: ignore[arg-type]
        _env_file=None,
    )  # type: ignore[call-arg]
    migrate.upgrade(settings.database_url)
    seeded = asyncio.run(_seed(settings))
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "telecare", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("server did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.2)
        yield Server(base, settings, seeded)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _stats(page: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = page.evaluate("() => window.telecareCall.stats()")
    return result


def _wait_for(predicate: Any, timeout: float = 20.0, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def test_patient_books_checks_in_is_admitted_and_talks_by_video_then_audio_only(server: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    seeded = server.seeded
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            patient_ctx = browser.new_context(base_url=server.base, viewport={"width": 1100, "height": 900})
            doctor_ctx = browser.new_context(base_url=server.base, viewport={"width": 1100, "height": 900})
            patient = patient_ctx.new_page()
            doctor = doctor_ctx.new_page()
            # Script errors and console errors (CSP violations are reported there) fail the test.
            errors: list[str] = []
            for page in (patient, doctor):
                page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

            # ---- the patient books today's first free slot and checks in from home in PA
            patient.goto("/login")
            patient.fill("#email", seeded.patient.email)
            patient.fill("#password", seeded.patient.password)
            patient.click("button[type=submit]")
            patient.wait_for_url("**/home")
            today = utc_now().date().isoformat()
            patient.goto(f"/visits/book?visit_type_id={seeded.visit_type_id}&state=PA&day={today}")
            first_slot = patient.locator("ul.slots li form").first
            expect(first_slot).to_contain_text("with")
            first_slot.locator("select[name=modality]").select_option("video")
            first_slot.locator("button[type=submit]").click()
            patient.wait_for_url(re.compile(r"/visits/\d+\?booked=1"))
            appointment_id = int(re.search(r"/visits/(\d+)", patient.url).group(1))  # type: ignore[union-attr]
            patient.click("text=Check in now")
            patient.check("input[name=location_type][value=home]")
            patient.fill("#address_line", "12 Elm Street")
            patient.fill("#city", "Scranton")
            patient.select_option("#state", "PA")
            patient.check("input[name=consent_accepted]")
            patient.click("button:has-text('Check in')")
            patient.wait_for_url(re.compile(rf"/visits/{appointment_id}\?checked_in=1"))

            # ---- camera and microphone test: own preview plays, the input level moves
            patient.goto(f"/visits/{appointment_id}/device-test")
            expect(patient.locator("#device-status")).to_have_attribute("data-state", "ok", timeout=15000)
            _wait_for(lambda: patient.evaluate("document.getElementById('self-preview').readyState") == 4)
            _wait_for(lambda: float(patient.get_attribute("#mic-level", "data-level") or 0) > 0.001)

            # ---- the waiting room, live
            patient.click("#continue")
            patient.wait_for_url(f"**/visits/{appointment_id}/waiting")
            expect(patient.locator("#wait-status")).to_contain_text("You are in the waiting room")
            patient.screenshot(path=str(ARTIFACTS / "visit-waiting-room-patient.png"), full_page=True)

            # ---- the clinician signs in (password + TOTP) and sees the patient in the live queue
            doctor.goto("/login")
            doctor.fill("#email", seeded.doctor.email)
            doctor.fill("#password", seeded.doctor.password)
            doctor.click("button[type=submit]")
            doctor.wait_for_url(re.compile(r"/login/(enrol|totp)"))
            assert seeded.doctor.totp_secret is not None
            doctor.fill("#code", pyotp.TOTP(seeded.doctor.totp_secret).now())
            doctor.click("form:has(#code) button[type=submit]")
            doctor.wait_for_url("**/home")
            doctor.goto("/clinic/queue")
            row = doctor.locator(f"#queue-rows tr[data-appointment='{appointment_id}']")
            expect(row).to_contain_text("In the waiting room")
            expect(row).to_contain_text("PA")
            expect(row.locator("td.waited")).to_contain_text(re.compile(r"\d+ min \d\d s"))
            doctor.screenshot(path=str(ARTIFACTS / "visit-waiting-room-clinician-queue.png"), full_page=True)

            # ---- admit: the clinician goes to the call, the patient's waiting room follows by itself
            row.locator("button.admit").click()
            doctor.wait_for_url(f"**/visits/{appointment_id}/call")
            patient.wait_for_url(f"**/visits/{appointment_id}/call", timeout=15000)
            doctor.click("#join-call")
            patient.click("#join-call")

            # ---- media flows both ways: remote video plays, bytes received grow on both sides
            remote_ready = "document.querySelector('.remote-video')?.readyState"
            for page in (patient, doctor):
                _wait_for(lambda p=page: p.evaluate(remote_ready) == 4)
            before = {name: _stats(p)[0] for name, p in (("patient", patient), ("doctor", doctor))}
            time.sleep(2)
            after = {name: _stats(p)[0] for name, p in (("patient", patient), ("doctor", doctor))}
            for name in ("patient", "doctor"):
                assert after[name]["state"] == "connected", after[name]
                assert after[name]["inbound"]["video"] > before[name]["inbound"]["video"] > 0, name
                assert after[name]["inbound"]["audio"] > before[name]["inbound"]["audio"] > 0, name
                assert after[name]["framesDecoded"] > before[name]["framesDecoded"], name
                assert after[name]["videoSenders"] == 1, name
            doctor.screenshot(path=str(ARTIFACTS / "visit-call-video.png"), full_page=True)

            # ---- switch to audio only (reason recorded): audio still flows, no video is sent
            doctor.select_option("#audio-reason", "patient_declined_video")
            doctor.click("#to-audio")
            for page in (patient, doctor):
                expect(page.locator("#call")).to_have_attribute("data-modality", "audio")
                expect(page.locator("#call-modality")).to_contain_text("Audio only")
            time.sleep(1)  # let the last video packets in flight arrive
            before = {name: _stats(p)[0] for name, p in (("patient", patient), ("doctor", doctor))}
            time.sleep(2)
            after = {name: _stats(p)[0] for name, p in (("patient", patient), ("doctor", doctor))}
            for name in ("patient", "doctor"):
                assert after[name]["videoSenders"] == 0, name
                assert after[name]["outbound"]["video"] == before[name]["outbound"]["video"], name
                assert after[name]["inbound"]["video"] == before[name]["inbound"]["video"], name
                assert after[name]["inbound"]["audio"] > before[name]["inbound"]["audio"], name
            doctor.screenshot(path=str(ARTIFACTS / "visit-call-audio-only.png"), full_page=True)

            # ---- end the visit: both sides are told
            doctor.click("#end-visit")
            for page in (patient, doctor):
                expect(page.locator("#call-status")).to_contain_text("The visit has ended")
            assert errors == []
        finally:
            browser.close()
    kinds = asyncio.run(_timeline(server.settings))
    assert [k for k, _ in kinds][:3] == ["checked_in", "entered_waiting_room", "admitted"]
    assert ("modality_changed", "patient_declined_video") in kinds
    assert "connected" in [k for k, _ in kinds]
    assert kinds[-1] == ("ended", None)
