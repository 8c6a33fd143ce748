"""Page-level behaviour without a browser (httpx against the app, SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from telecare.access.policy import Resource
from telecare.core.db import Database
from telecare.core.time import freeze_clock, reset_clock
from telecare.identity.models import Role
from telecare.web import chart
from tests.factories import (
    Account,
    add_to_care_team,
    bearer,
    enrol_rpm,
    make_device,
    make_device_key,
    make_org,
    make_user,
    web_login,
)
from tests.monitoring.conftest import bp
from tests.visit_factories import NOW, Clinic, book_visit, make_clinic


async def _counts_section(session: Any, principal: Any, patient: Any) -> dict[str, Any]:
    return {"members": [{"display_name": "Aggregate-only section", "credentials": "", "role": "x"}]}


async def _clinic_with_a_visit_and_an_alert(
    client: httpx.AsyncClient, db: Database
) -> tuple[Clinic, Account, int]:
    """A physician and a therapist on the patient's care team, a booked visit (scheduling data) and an open
    RPM alert (clinical data) stored through the real ingest pipeline. Returns the clinic, the therapist and
    the appointment id."""
    clinic = await make_clinic(db)
    doc, patient = clinic.doctor, clinic.patient
    therapist = await make_user(db, clinic.org_id, Role.THERAPIST)
    assert patient.patient_id
    assert doc.practitioner_id
    assert therapist.practitioner_id
    for prac in (doc.practitioner_id, therapist.practitioner_id):
        await add_to_care_team(db, patient_id=patient.patient_id, practitioner_id=prac, org_id=clinic.org_id)
    freeze_clock(NOW)
    appointment = await book_visit(db, clinic)
    reset_clock()
    await enrol_rpm(db, clinic.org_id, patient.patient_id, doc.practitioner_id)
    device_id, serial = await make_device(db, clinic.org_id, patient_id=patient.patient_id)
    key = await make_device_key(db, clinic.org_id, [device_id])
    r = await client.post("/api/v1/monitoring/readings", json=[bp(serial, 190, 100, 5)], headers=bearer(key))
    assert r.status_code < 300, r.text
    return clinic, therapist, appointment.id


async def test_chart_sections_render_only_for_roles_the_policy_allows(
    client: httpx.AsyncClient, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A section guarded by the Aggregate grant: coordinators hold it, clinicians do not.
    monkeypatch.setitem(
        chart._sections,
        "agg",
        chart.ChartSection(
            "agg", "Aggregates", _counts_section, "chart/care_team.html", Resource.AGGREGATE, 25
        ),
    )
    clinic, therapist, _ = await _clinic_with_a_visit_and_an_alert(client, db)
    doc, coordinator, patient = clinic.doctor, clinic.coordinator, clinic.patient
    chart_url = f"/patients/{patient.patient_id}"

    # The physician: contact, care team, the visits, remote monitoring with the open alert, and the
    # asynchronous-care sections (messages, e-consults, skin concerns), questionnaires and tasks.
    await web_login(client, doc)
    page = (await client.get(chart_url)).text
    assert re.findall(r'data-section="([^"]+)"', page) == [
        "contact",
        "care-team",
        "visits",
        "monitoring",
        "messages",
        "econsults",
        "skin",
        "questionnaires",
        "triage",
        "education",
        "tasks",
    ]
    assert "Aggregate-only section" not in page
    assert "2026-12-02 14:00" in page  # the booked visit (UTC)
    assert "Blood pressure in crisis range" in page
    assert f'href="/monitoring/patients/{patient.patient_id}"' in page
    assert "Book a visit for this patient" not in page

    # A therapist on the care team sees the visits but holds no RPM grant: no monitoring section.
    client.cookies.clear()
    await web_login(client, therapist)
    page = (await client.get(chart_url)).text
    assert re.findall(r'data-section="([^"]+)"', page) == [
        "contact",
        "care-team",
        "visits",
        "messages",
        "econsults",
        "skin",
        "questionnaires",
        "triage",
        "education",
        "tasks",
    ]
    assert "2026-12-02 14:00" in page
    assert "Blood pressure in crisis range" not in page

    # The coordinator: contact, care team, aggregates and the visits to schedule; never monitoring.
    client.cookies.clear()
    await web_login(client, coordinator)
    page = (await client.get(chart_url)).text
    assert re.findall(r'data-section="([^"]+)"', page) == ["contact", "care-team", "agg", "visits"]
    assert "Aggregate-only section" in page
    assert "2026-12-02 14:00" in page
    assert "Book a visit for this patient" in page
    assert "Blood pressure in crisis range" not in page
    assert "/monitoring/patients/" not in page


async def test_pages_carry_no_inline_script_or_style_and_send_a_strict_csp(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    admin = await make_user(db, org, Role.ADMIN)
    r = await client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    pages = [r.text]
    await web_login(client, admin)
    for path in ("/home", "/admin/users", "/admin/users/new", "/admin/break-glass", "/stats", "/nowhere"):
        pages.append((await client.get(path)).text)
    for html in pages:
        assert_no_inline_code(html)


def assert_no_inline_code(html: str) -> None:
    # A `<script type="application/json">` data block is not executed, so CSP does not apply to it.
    assert not re.search(r'<script(?![^>]*\b(?:src=|type="application/json"))[^>]*>', html), html
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers


async def test_visit_and_monitoring_pages_carry_no_inline_script_or_style(
    client: httpx.AsyncClient, db: Database
) -> None:
    clinic, _, appointment_id = await _clinic_with_a_visit_and_an_alert(client, db)
    patient_id = clinic.patient.patient_id
    by_role = [
        (
            clinic.doctor,
            [
                f"/patients/{patient_id}",
                "/visits",
                "/clinic/queue",
                f"/visits/{appointment_id}",
                "/monitoring",
                "/monitoring/billing",
                f"/monitoring/patients/{patient_id}",
            ],
        ),
        (
            clinic.coordinator,
            [
                f"/patients/{patient_id}",
                "/schedule/calendar?day=2026-12-02",
                "/schedule/coverage",
                "/billing/review",
                f"/visits/{appointment_id}",
            ],
        ),
        (clinic.patient, ["/home", "/visits", f"/visits/{appointment_id}", "/visits/book", "/my/readings"]),
    ]
    seen: dict[str, str] = {}
    for account, paths in by_role:
        client.cookies.clear()
        await web_login(client, account)  # one sign-in each: a TOTP code is accepted once
        for path in paths:
            r = await client.get(path)
            assert r.status_code == 200, (path, r.text)
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert_no_inline_code(r.text)
            seen[f"{account.role}:{path}"] = r.text
    # The monitoring page's data block is inert JSON with markup escaped, not a script.
    html = seen[f"physician:/monitoring/patients/{patient_id}"]
    block = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html, re.S)
    assert block
    assert "<" not in block.group(1)


async def test_unknown_page_and_refused_page_are_friendly_html(
    client: httpx.AsyncClient, db: Database
) -> None:
    org = await make_org(db)
    informatics = await make_user(db, org, Role.INFORMATICS)
    r = await client.get("/no-such-page", headers={"accept": "text/html"})
    assert r.status_code == 404
    assert "We could not find that page" in r.text
    assert 'href="/login"' in r.text
    await web_login(client, informatics)
    r = await client.get("/admin/users")
    assert r.status_code == 403
    assert "does not have access" in r.text
    assert 'href="/home"' in r.text
